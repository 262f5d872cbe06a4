// The one translation unit of the fatbin: every kernel file, so the backend loads a single module.
#include "elementwise.cu"
#include "rows.cu"
#include "matmul.cu"
#include "attention.cu"
#include "sequence.cu"
#include "sample.cu"
