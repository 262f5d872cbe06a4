// The llmarch side of bench/agree.sh:
//   make <preset> <dir> <seed> <std> <embed-std>   a random model of a preset's shapes whose logits are not flat
//   logits <model.gguf|dir> <ids.json> <out.json> [prefill|decode]
//       teacher-forced top-5 next-token logits at every position: all positions in one prefill batch (the packed GEMM,
//       F32 activations), or one decode step per token (the matrix-vector kernels, activations quantized to 8 bits as
//       llama.cpp quantizes them)
using System.Text.Json;
using LlmArch.Analysis;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Models;

switch (args.ElementAtOrDefault(0))
{
    case "make":
    {
        var cfg = Presets.Load(args[1]);
        string dir = args[2];
        ulong seed = ulong.Parse(args[3]);
        double std = double.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture);
        double embedStd = double.Parse(args[5], System.Globalization.CultureInfo.InvariantCulture);
        RandomCheckpoint.Write(cfg, dir, DType.BF16, seed, std);
        ScaleTensor(Path.Combine(dir, "model.safetensors"), "model.embed_tokens.weight", embedStd / std);
        Console.WriteLine($"wrote {dir}: {args[1]} shapes, weights N(0, {std}^2), embedding N(0, {embedStd}^2), seed {seed}");
        return 0;
    }
    case "logits":
    {
        var model = ModelLoader.Load(args[1]);
        var ids = JsonSerializer.Deserialize<int[]>(File.ReadAllText(args[2]))!;
        bool decode = args.ElementAtOrDefault(4) == "decode";
        var cache = model.CreateCache(1, ids.Length);
        int V = model.VocabSize;
        var row = new float[V];
        var top = new List<object>();
        var all = decode ? null : model.Forward(ids, 1, cache);
        for (int t = 0; t < ids.Length; t++)
        {
            if (decode) model.Backend.Download<float>(model.Forward(ids.AsSpan(t, 1), 1, cache, lastOnly: true), row);
            else model.Backend.Download<float>(all!, row, (long)t * V);
            var best = Enumerable.Range(0, V).OrderByDescending(i => row[i]).Take(5).ToArray();
            top.Add(new { ids = best, logits = best.Select(i => row[i]).ToArray() });
        }
        File.WriteAllText(args[3], JsonSerializer.Serialize(top));
        return 0;
    }
    default:
        Console.Error.WriteLine("usage: make <preset> <dir> <seed> <std> <embed-std> | logits <model> <ids.json> <out.json>");
        return 2;
}

// Multiplies one BF16 tensor of a safetensors file in place.
static void ScaleTensor(string file, string name, double factor)
{
    long begin, end, dataStart;
    using (var st = new SafeTensorsFile(file))
    {
        var info = st.Tensors[name];
        begin = info.Begin; end = info.End;
    }
    using var fs = new FileStream(file, FileMode.Open, FileAccess.ReadWrite);
    var len = new byte[8];
    fs.ReadExactly(len);
    dataStart = 8 + (long)BitConverter.ToUInt64(len);
    var buf = new byte[end - begin];
    fs.Position = dataStart + begin;
    fs.ReadExactly(buf);
    for (long i = 0; i < buf.Length; i += 2)
    {
        float v = BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(buf, (int)i) << 16) * (float)factor;
        ushort b = LlmArch.Compute.Cpu.Convert.F32ToBF16(v);
        buf[i] = (byte)b; buf[i + 1] = (byte)(b >> 8);
    }
    fs.Position = dataStart + begin;
    fs.Write(buf);
}
