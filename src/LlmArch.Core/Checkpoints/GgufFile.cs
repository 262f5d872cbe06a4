using System.IO.MemoryMappedFiles;
using System.Runtime.CompilerServices;
using System.Text;
using LlmArch.Compute;

namespace LlmArch.Checkpoints;

/// <summary>ggml's tensor type numbers (the ones a GGUF file may name), and how each maps to ours.</summary>
public static class GgmlType
{
    public const uint F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11,
        Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20,
        IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
        TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39;

    private static readonly Dictionary<uint, string> Names = new()
    {
        [F32] = "F32", [F16] = "F16", [Q4_0] = "Q4_0", [Q4_1] = "Q4_1", [Q5_0] = "Q5_0", [Q5_1] = "Q5_1", [Q8_0] = "Q8_0",
        [Q8_1] = "Q8_1", [Q2_K] = "Q2_K", [Q3_K] = "Q3_K", [Q4_K] = "Q4_K", [Q5_K] = "Q5_K", [Q6_K] = "Q6_K", [Q8_K] = "Q8_K",
        [IQ2_XXS] = "IQ2_XXS", [IQ2_XS] = "IQ2_XS", [IQ3_XXS] = "IQ3_XXS", [IQ1_S] = "IQ1_S", [IQ4_NL] = "IQ4_NL",
        [IQ3_S] = "IQ3_S", [IQ2_S] = "IQ2_S", [IQ4_XS] = "IQ4_XS", [I8] = "I8", [I16] = "I16", [I32] = "I32", [I64] = "I64",
        [F64] = "F64", [IQ1_M] = "IQ1_M", [BF16] = "BF16", [TQ1_0] = "TQ1_0", [TQ2_0] = "TQ2_0", [MXFP4] = "MXFP4",
    };

    /// <summary>Block size (values) and bytes per block of every known type (plain types: 1 value per "block").</summary>
    private static readonly Dictionary<uint, (int Values, int Bytes)> Blocks = new()
    {
        [F32] = (1, 4), [F16] = (1, 2), [BF16] = (1, 2), [F64] = (1, 8), [I8] = (1, 1), [I16] = (1, 2), [I32] = (1, 4), [I64] = (1, 8),
        [Q4_0] = (32, 18), [Q4_1] = (32, 20), [Q5_0] = (32, 22), [Q5_1] = (32, 24), [Q8_0] = (32, 34), [Q8_1] = (32, 36),
        [Q2_K] = (256, 84), [Q3_K] = (256, 110), [Q4_K] = (256, 144), [Q5_K] = (256, 176), [Q6_K] = (256, 210), [Q8_K] = (256, 292),
        [IQ2_XXS] = (256, 66), [IQ2_XS] = (256, 74), [IQ3_XXS] = (256, 98), [IQ1_S] = (256, 50), [IQ4_NL] = (32, 18),
        [IQ3_S] = (256, 110), [IQ2_S] = (256, 82), [IQ4_XS] = (256, 136), [IQ1_M] = (256, 56), [TQ1_0] = (256, 54), [TQ2_0] = (256, 66),
        [MXFP4] = (32, 17),
    };

    public static string Name(uint t) => Names.TryGetValue(t, out var n) ? n : $"type {t}";
    public static bool IsKnown(uint t) => Blocks.ContainsKey(t);
    public static (int Values, int Bytes) Block(uint t) => Blocks[t];

    /// <summary>Our dtype for a ggml type we compute with (MXFP4 is repacked to ours at load), or null.</summary>
    public static DType? ToDType(uint t) => t switch
    {
        F32 => DType.F32, F16 => DType.F16, BF16 => DType.BF16, F64 => DType.F64, I8 => DType.I8, I16 => DType.I16,
        I32 => DType.I32, I64 => DType.I64, Q8_0 => DType.Q8_0, Q4_0 => DType.Q4_0, Q4_K => DType.Q4_K, Q5_K => DType.Q5_K,
        Q6_K => DType.Q6_K, MXFP4 => DType.MXFP4,
        _ => null,
    };

    public static uint FromDType(DType d) => d switch
    {
        DType.F32 => F32, DType.F16 => F16, DType.BF16 => BF16, DType.Q8_0 => Q8_0, DType.Q4_0 => Q4_0,
        DType.Q4_K => Q4_K, DType.Q5_K => Q5_K, DType.Q6_K => Q6_K, DType.MXFP4 => MXFP4,
        _ => throw new ArgumentException($"{d} has no GGUF type"),
    };

    public const string Supported = "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, MXFP4";
}

/// <summary>One tensor of a GGUF file. <see cref="Ne"/> is ggml's order (innermost first); <see cref="Shape"/> is ours.</summary>
public sealed record GgufTensorInfo(string Name, long[] Ne, uint Type, long Offset, long Bytes)
{
    /// <summary>Row-major shape, outermost first (ggml's ne reversed).</summary>
    public long[] Shape => Ne.Reverse().ToArray();
    public long Count => Ne.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A GGUF file (v2/v3), memory-mapped. Everything in the header is validated before it is trusted: magic and version,
/// every count against the bytes left (so a lying count cannot make us allocate), string and array lengths, value
/// types, duplicate keys and tensor names, tensor ranks, dimensions, types, block alignment of rows, alignment and
/// bounds of every tensor's data and overlaps between tensors. Tensors are views into the mapping (no copy), except
/// MXFP4, which is repacked into our layout (values, then one scale byte per 32).
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    /// <summary>Whether <paramref name="path"/> names a GGUF file rather than a model directory (it may not exist).</summary>
    public static bool IsPath(string path) => path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) && !Directory.Exists(path);

    /// <summary>Whether <paramref name="path"/> is an existing GGUF file.</summary>
    public static bool Exists(string path) => IsPath(path) && File.Exists(path);

    private readonly MemoryMappedFile? _mmf;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly long _size;

    public string Path { get; }
    public uint Version { get; }
    public long Alignment { get; }
    public long DataStart { get; }
    /// <summary>Metadata values: long (signed ints), ulong (u64), double (floats), bool, string, or arrays of those.</summary>
    public IReadOnlyDictionary<string, object> Metadata { get; }
    /// <summary>Each metadata key's GGUF value type (and element type for arrays), so a value can be written back as it was.</summary>
    public IReadOnlyDictionary<string, (uint Type, uint Element)> MetadataTypes { get; }
    public IReadOnlyDictionary<string, GgufTensorInfo> Tensors { get; }
    /// <summary>Tensor names in file order.</summary>
    public IReadOnlyList<string> TensorOrder { get; }

    public const uint Magic = 0x46554747; // "GGUF"
    private const int MaxDims = 4;
    private const long MaxString = 64L << 20; // 64 MiB: chat templates and merges are far smaller

    public GgufFile(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw new CheckpointFormatException($"{path}: file not found");
        _size = new FileInfo(path).Length;
        if (_size < 24) throw new CheckpointFormatException($"{path}: truncated GGUF file ({_size} bytes; the header alone needs 24)");
        _mmf = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _mmf.CreateViewAccessor(0, _size, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;
        try
        {
            var r = new Reader(_base, _size, path);
            uint magic = r.U32("magic");
            if (magic != Magic) throw Error($"not a GGUF file (magic 0x{magic:X8}, expected 0x{Magic:X8} 'GGUF')");
            Version = r.U32("version");
            if (Version is not (2 or 3)) throw Error($"GGUF version {Version} is not supported (supported: 2, 3)");
            ulong nTensors = r.U64("tensor_count"), nKv = r.U64("metadata_kv_count");
            // Every key/value needs at least 8 + 1 + 4 + 1 bytes and every tensor info at least 8 + 1 + 4 + 8 + 4 + 8.
            if (nKv > (ulong)r.Remaining / 14) throw Error($"metadata_kv_count {nKv} cannot fit in the {r.Remaining} bytes left (truncated file or lying count)");
            if (nTensors > (ulong)r.Remaining / 33) throw Error($"tensor_count {nTensors} cannot fit in the {r.Remaining} bytes left (truncated file or lying count)");

            var meta = new Dictionary<string, object>(StringComparer.Ordinal);
            var types = new Dictionary<string, (uint, uint)>(StringComparer.Ordinal);
            for (ulong i = 0; i < nKv; i++)
            {
                string key = r.String($"key of metadata entry {i}");
                if (key.Length == 0) throw Error($"metadata entry {i} has an empty key");
                uint type = r.U32($"type of '{key}'");
                object value = r.Value(type, key, nested: false, out uint element);
                if (!meta.TryAdd(key, value)) throw Error($"metadata key '{key}' appears twice");
                types[key] = (type, element);
            }
            Metadata = meta;
            MetadataTypes = types;
            Alignment = 32;
            if (meta.TryGetValue("general.alignment", out var al))
            {
                if (al is not long a || a <= 0 || (a & (a - 1)) != 0 || a > 1 << 20)
                    throw Error($"metadata key 'general.alignment' is {al}; it must be a power of two up to 1 MiB");
                Alignment = a;
            }

            var tensors = new Dictionary<string, GgufTensorInfo>(StringComparer.Ordinal);
            var order = new List<string>();
            for (ulong i = 0; i < nTensors; i++)
            {
                string name = r.String($"name of tensor {i}");
                uint nd = r.U32($"dimension count of tensor '{name}'");
                if (nd is 0 or > MaxDims) throw Error($"tensor '{name}' has {nd} dimensions (1..{MaxDims} allowed)");
                var ne = new long[nd];
                long count = 1;
                for (int d = 0; d < nd; d++)
                {
                    ulong v = r.U64($"dimension {d} of tensor '{name}'");
                    if (v == 0 || v > int.MaxValue) throw Error($"tensor '{name}' dimension {d} is {v} (1..{int.MaxValue} allowed)");
                    ne[d] = (long)v;
                    if (count > long.MaxValue / ne[d]) throw Error($"tensor '{name}' shape [{string.Join(", ", ne.Take(d + 1))}] overflows");
                    count *= ne[d];
                }
                uint type = r.U32($"type of tensor '{name}'");
                if (!GgmlType.IsKnown(type)) throw Error($"tensor '{name}' has unknown ggml type {type}");
                var (bv, bb) = GgmlType.Block(type);
                if (ne[0] % bv != 0) throw Error($"tensor '{name}' is {GgmlType.Name(type)} with rows of {ne[0]} values, not a multiple of its block of {bv}");
                long bytes = count / bv * bb;
                ulong off = r.U64($"offset of tensor '{name}'");
                if (off % (ulong)Alignment != 0) throw Error($"tensor '{name}' offset {off} is not a multiple of the alignment {Alignment}");
                if (!tensors.TryAdd(name, new GgufTensorInfo(name, ne, type, (long)Math.Min(off, long.MaxValue), bytes)))
                    throw Error($"tensor '{name}' appears twice");
                order.Add(name);
            }
            DataStart = (r.Position + Alignment - 1) / Alignment * Alignment;
            long dataLen = _size - DataStart;
            if (dataLen < 0 && tensors.Count > 0) throw Error($"truncated: the tensor data would start at byte {DataStart}, past the end of the {_size}-byte file");
            foreach (var t in tensors.Values)
                if (t.Offset > dataLen || t.Bytes > dataLen - t.Offset)
                    throw Error($"tensor '{t.Name}' ({GgmlType.Name(t.Type)} [{string.Join(", ", t.Shape)}], {t.Bytes} bytes at offset {t.Offset}) lies outside the {dataLen} bytes of tensor data (truncated file?)");
            var sorted = tensors.Values.OrderBy(t => t.Offset).ToList();
            for (int i = 1; i < sorted.Count; i++)
                if (sorted[i].Offset < sorted[i - 1].Offset + sorted[i - 1].Bytes)
                    throw Error($"tensors '{sorted[i - 1].Name}' and '{sorted[i].Name}' overlap (offsets {sorted[i - 1].Offset} + {sorted[i - 1].Bytes} > {sorted[i].Offset})");
            Tensors = tensors;
            TensorOrder = order;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private CheckpointFormatException Error(string what) => new($"{Path}: {what}");

    /// <summary>A view of a tensor's data in our shape and dtype (MXFP4 repacked into a new buffer).</summary>
    public Tensor Get(string name)
    {
        if (!Tensors.TryGetValue(name, out var info)) throw Error($"tensor '{name}' not found");
        var dtype = GgmlType.ToDType(info.Type)
            ?? throw Error($"tensor '{name}' has type {GgmlType.Name(info.Type)}, which is not supported (supported: {GgmlType.Supported})");
        Shape shape;
        try { shape = Shape.Of(info.Shape); }
        catch (Exception e) when (e is OverflowException or ArgumentException)
        { throw Error($"tensor '{name}' shape [{string.Join(", ", info.Shape)}] is not supported ({e.Message})"); }
        byte* p = _base + DataStart + info.Offset;
        if (dtype == DType.MXFP4) return RepackMxfp4(p, shape, name);
        return new Tensor(dtype, shape, (nint)p, this, name);
    }

    /// <summary>ggml's MXFP4 blocks (e8m0 scale, 16 bytes: value j low nibble, j + 16 high) to ours (values in order, two per byte; scales apart).</summary>
    private static Tensor RepackMxfp4(byte* src, Shape shape, string name)
    {
        long count = shape.Count, blocks = count / 32;
        var t = Tensor.Zeros(DType.MXFP4, shape, name);
        int cols = shape.Last;
        var scaleShape = shape.Rank switch
        {
            1 => new Shape(cols / 32),
            2 => new Shape(shape[0], cols / 32),
            3 => new Shape(shape[0], shape[1], cols / 32),
            _ => new Shape(shape[0], shape[1], shape[2], cols / 32),
        };
        var s = Tensor.Zeros(DType.U8, scaleShape, name + ".scales");
        byte* dv = (byte*)t.Ptr, ds = (byte*)s.Ptr;
        for (long b = 0; b < blocks; b++) Mxfp4Blocks.ToOurs(src + b * Mxfp4Blocks.GgmlBytes, dv + b * 16, ds + b);
        t.Scales = s; t.ScaleBlock = (1, 32);
        return t;
    }

    /// <summary>The first byte of a tensor's data in the mapping (for readers that repack several tensors into one).</summary>
    internal byte* Data(GgufTensorInfo info) => _base + DataStart + info.Offset;

    /// <summary>A tensor's info, or a clear error naming it.</summary>
    public GgufTensorInfo Info(string name) => Tensors.TryGetValue(name, out var t) ? t : throw Error($"tensor '{name}' not found");

    // ---------- typed metadata ----------

    public bool Has(string key) => Metadata.ContainsKey(key);

    /// <summary>A metadata value in the CLR type that writes back as its original GGUF type (for copying keys).</summary>
    public object TypedValue(string key)
    {
        var v = Metadata[key];
        var (t, e) = MetadataTypes[key];
        return (t, v) switch
        {
            (0 or 2 or 4, long l) => (uint)l,
            (1 or 3 or 5, long l) => (int)l,
            (6, double d) => (float)d,
            (9, long[] a) when e is 0 or 2 or 4 or 1 or 3 or 5 => a.Select(x => (int)x).ToArray(),
            (9, double[] a) when e == 6 => a.Select(x => (float)x).ToArray(),
            _ => v,
        };
    }

    public string? String(string key) => Metadata.TryGetValue(key, out var v) ? v as string ?? throw Wrong(key, v, "a string") : null;

    public long? Int(string key)
    {
        if (!Metadata.TryGetValue(key, out var v)) return null;
        return v switch
        {
            long l => l,
            ulong u when u <= long.MaxValue => (long)u,
            _ => throw Wrong(key, v, "an integer"),
        };
    }

    public double? Float(string key)
    {
        if (!Metadata.TryGetValue(key, out var v)) return null;
        return v switch { double d => d, long l => l, ulong u => u, _ => throw Wrong(key, v, "a number") };
    }

    public bool? Bool(string key) => Metadata.TryGetValue(key, out var v) ? v as bool? ?? throw Wrong(key, v, "a bool") : null;

    public T[]? Array<T>(string key)
    {
        if (!Metadata.TryGetValue(key, out var v)) return null;
        if (v is T[] a) return a;
        if (typeof(T) == typeof(long) && v is ulong[] u && u.All(x => x <= long.MaxValue)) return (T[])(object)u.Select(x => (long)x).ToArray();
        if (typeof(T) == typeof(double) && v is long[] li) return (T[])(object)li.Select(x => (double)x).ToArray();
        throw Wrong(key, v, $"an array of {(typeof(T) == typeof(string) ? "strings" : typeof(T) == typeof(long) ? "integers" : typeof(T) == typeof(double) ? "numbers" : typeof(T).Name)}");
    }

    private CheckpointFormatException Wrong(string key, object v, string want) =>
        Error($"metadata key '{key}' is {Describe(v)}; expected {want}");

    private static string Describe(object v) => v switch
    {
        string => "a string", bool => "a bool", long or ulong => "an integer", double => "a float",
        System.Array a => $"an array of {a.Length}",
        _ => v.GetType().Name,
    };

    public void Dispose()
    {
        if (_view is not null)
        {
            if (_base is not null) _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _mmf?.Dispose();
    }

    /// <summary>Bounds-checked little-endian reads over the mapped header.</summary>
    private ref struct Reader(byte* p, long size, string path)
    {
        private long _pos;
        public readonly long Position => _pos;
        public readonly long Remaining => size - _pos;

        private readonly CheckpointFormatException Truncated(string what, long need) =>
            new($"{path}: truncated GGUF header: {what} needs {need} bytes at offset {_pos}, {Remaining} left");

        private byte* Take(long n, string what)
        {
            if (n > Remaining) throw Truncated(what, n);
            byte* q = p + _pos;
            _pos += n;
            return q;
        }

        public uint U32(string what) => Unsafe.ReadUnaligned<uint>(Take(4, what));
        public ulong U64(string what) => Unsafe.ReadUnaligned<ulong>(Take(8, what));

        public string String(string what)
        {
            ulong len = U64(what);
            if (len > (ulong)Remaining) throw new CheckpointFormatException($"{path}: {what}: string length {len} exceeds the {Remaining} bytes left");
            if ((long)len > MaxString) throw new CheckpointFormatException($"{path}: {what}: string of {len} bytes exceeds the {MaxString} byte limit");
            byte* s = Take((long)len, what);
            try { return new UTF8Encoding(false, true).GetString(s, (int)len); }
            catch (DecoderFallbackException) { throw new CheckpointFormatException($"{path}: {what} is not valid UTF-8"); }
        }

        private static int ScalarSize(uint t) => t switch
        {
            0 or 1 or 7 => 1, 2 or 3 => 2, 4 or 5 or 6 => 4, 10 or 11 or 12 => 8, _ => 0,
        };

        private object Scalar(uint t, string what)
        {
            byte* s = Take(ScalarSize(t), what);
            return t switch
            {
                0 => (long)*s, 1 => (long)*(sbyte*)s, 2 => (long)Unsafe.ReadUnaligned<ushort>(s), 3 => (long)Unsafe.ReadUnaligned<short>(s),
                4 => (long)Unsafe.ReadUnaligned<uint>(s), 5 => (long)Unsafe.ReadUnaligned<int>(s), 6 => (double)Unsafe.ReadUnaligned<float>(s),
                7 => *s switch { 0 => false, 1 => true, _ => throw new CheckpointFormatException($"{path}: {what}: bool byte {*s} is not 0 or 1") },
                10 => Unsafe.ReadUnaligned<ulong>(s), 11 => Unsafe.ReadUnaligned<long>(s), _ => Unsafe.ReadUnaligned<double>(s),
            };
        }

        public object Value(uint type, string key, bool nested, out uint element)
        {
            string what = nested ? $"element of '{key}'" : $"value of '{key}'";
            element = 0;
            if (type == 8) return String(what);
            if (type == 9)
            {
                if (nested) throw new CheckpointFormatException($"{path}: metadata key '{key}' nests arrays, which GGUF readers do not support");
                uint et = U32($"element type of '{key}'");
                element = et;
                if (et == 9) throw new CheckpointFormatException($"{path}: metadata key '{key}' nests arrays, which GGUF readers do not support");
                ulong n = U64($"length of '{key}'");
                int es = et == 8 ? 8 : ScalarSize(et);
                if (es == 0) throw new CheckpointFormatException($"{path}: metadata key '{key}' is an array of unknown value type {et}");
                if (n > (ulong)(Remaining / es)) throw new CheckpointFormatException($"{path}: metadata key '{key}' claims {n} elements, more than the {Remaining} bytes left can hold");
                int count = (int)n;
                switch (et)
                {
                    case 8: { var a = new string[count]; for (int i = 0; i < count; i++) a[i] = String(what); return a; }
                    case 7: { var a = new bool[count]; for (int i = 0; i < count; i++) a[i] = (bool)Scalar(et, what); return a; }
                    case 6 or 12: { var a = new double[count]; for (int i = 0; i < count; i++) a[i] = (double)Scalar(et, what); return a; }
                    case 10: { var a = new ulong[count]; for (int i = 0; i < count; i++) a[i] = (ulong)Scalar(et, what); return a; }
                    default: { var a = new long[count]; for (int i = 0; i < count; i++) a[i] = (long)Scalar(et, what); return a; }
                }
            }
            if (ScalarSize(type) == 0) throw new CheckpointFormatException($"{path}: metadata key '{key}' has unknown value type {type}");
            return Scalar(type, what);
        }
    }
}

/// <summary>
/// MXFP4 blocks of 32 values. ggml's <c>block_mxfp4</c> is 17 bytes: the e8m0 scale, then 16 bytes where byte j holds
/// value j in its low nibble and value j + 16 in its high nibble. Ours (and the Hugging Face checkpoints') keeps the
/// values in order, two per byte, low nibble first (byte k: values 2k, 2k + 1), with the scales apart. The e2m1 codes
/// and the e8m0 exponent mean the same in both (ggml's table is doubled and its scale halved).
/// </summary>
public static unsafe class Mxfp4Blocks
{
    public const int GgmlBytes = 17;

    /// <summary>One ggml block to 16 bytes of our values and one scale byte.</summary>
    public static void ToOurs(byte* ggml, byte* values, byte* scale)
    {
        *scale = ggml[0];
        byte* q = ggml + 1;
        for (int k = 0; k < 8; k++)
        {
            values[k] = (byte)((q[2 * k] & 0xF) | ((q[2 * k + 1] & 0xF) << 4));      // values 2k, 2k + 1 (< 16): low nibbles
            values[8 + k] = (byte)((q[2 * k] >> 4) | (q[2 * k + 1] & 0xF0));           // values 16 + 2k, 17 + 2k: high nibbles
        }
    }

    /// <summary>16 bytes of our values and their scale to one ggml block.</summary>
    public static void ToGgml(byte* values, byte scale, byte* ggml)
    {
        ggml[0] = scale;
        for (int j = 0; j < 16; j++)
        {
            int lo = (values[j >> 1] >> ((j & 1) * 4)) & 0xF;               // value j
            int hi = (values[8 + (j >> 1)] >> ((j & 1) * 4)) & 0xF;         // value j + 16
            ggml[1 + j] = (byte)(lo | (hi << 4));
        }
    }
}
