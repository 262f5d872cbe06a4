namespace LlmArch.Compute;

/// <summary>
/// Optional capability of a backend that can record a whole forward step (every op between Prepare and the logits)
/// and replay it for later steps of the same shape (a CUDA graph). <see cref="Models.CausalLM.Forward(StepBatch, Blocks.ModelCache, bool)"/>
/// calls it around its model code; a step's host-side decisions depend only on the batch's shape, and the ops read
/// token ids, positions and slots from device memory written by <see cref="IBackend.Prepare"/>, so a replay computes
/// exactly what running the ops again would.
/// </summary>
public interface IStepGraphs
{
    /// <summary>
    /// Called after <see cref="IBackend.Prepare"/>: true when a recorded step of this shape (and this cache) was
    /// replayed, with its outputs; false when the model code must run.
    /// </summary>
    bool TryReplay(StepBatch batch, object cache, bool lastOnly, out Tensor logits, out Tensor hidden);
    /// <summary>Called before the model code runs the step's ops (when <see cref="TryReplay"/> returned false).</summary>
    void BeginStep(StepBatch batch, object cache, bool lastOnly);
    /// <summary>Called after the step's ops with its outputs, or with nulls when the model code threw.</summary>
    void EndStep(Tensor? logits, Tensor? hidden);
}
