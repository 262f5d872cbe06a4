using LlmArch.Fuzz;

namespace LlmArch.Tests;

/// <summary>
/// The fuzz targets (fuzz/LlmArch.Fuzz/Targets.cs, compiled into this suite) over every saved input: the seed corpora
/// (fuzz/corpus/TARGET) and every input a fuzzing run ever crashed or hung on (fuzz/regressions/TARGET, kept after the
/// fix). Each must succeed or end in an <see cref="LlmArchInputException"/>, in bounded time.
/// </summary>
public class FuzzRegressionTests
{
    public static TheoryData<string> TargetNames() => new(Targets.All.Keys);

    [Theory]
    [MemberData(nameof(TargetNames))]
    public void SavedInputsEndInSuccessOrOneInputError(string target)
    {
        var run = Targets.All[target];
        var files = new[] { "corpus", "regressions" }
            .Select(d => Path.Combine(TestPaths.Root, "fuzz", d, target))
            .Where(Directory.Exists)
            .SelectMany(d => Directory.GetFiles(d))
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.NotEmpty(files);
        foreach (var f in files)
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            try { run(File.ReadAllBytes(f)); }
            catch (LlmArchInputException) { }
            catch (Exception e) { Assert.Fail($"{Path.GetRelativePath(TestPaths.Root, f)}: {e.GetType().Name}: {e.Message}"); }
            Assert.True(sw.Elapsed.TotalSeconds < 20, $"{f}: took {sw.Elapsed.TotalSeconds:F1}s");
        }
    }
}
