namespace LlmArch.Compute;

/// <summary>Special functions to double precision (GELU's erf; the probit of Gemma 3n's sparsity cutoff).</summary>
public static class SpecialFunctions
{
    /// <summary>Abramowitz-Stegun 7.1.26 is too coarse for 1e-6 parity; this uses a continued erfc for |x| large and a series otherwise.</summary>
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return x;
        if (double.IsInfinity(x)) return x > 0 ? 1 : -1;
        double ax = Math.Abs(x);
        double r;
        if (ax < 2.5)
        {
            // Maclaurin series: erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
            double term = ax, sum = ax, x2 = ax * ax;
            for (int n = 1; n < 60; n++)
            {
                term *= -x2 / n;
                double add = term / (2 * n + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17 * Math.Abs(sum)) break;
            }
            r = 2.0 / Math.Sqrt(Math.PI) * sum;
        }
        else
        {
            // erfc continued fraction (Lentz), accurate for x >= 2.5
            double f = ax, c = ax, d = 0, tiny = 1e-300;
            for (int n = 1; n < 200; n++)
            {
                double an = n / 2.0;
                d = ax + an * d; d = Math.Abs(d) < tiny ? tiny : d; d = 1 / d;
                c = ax + an / c; c = Math.Abs(c) < tiny ? tiny : c;
                double delta = c * d; f *= delta;
                if (Math.Abs(delta - 1) < 1e-16) break;
            }
            r = 1.0 - Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / f;
        }
        return x < 0 ? -r : r;
    }

    /// <summary>The standard normal inverse CDF (probit), to double precision: Acklam's rational start plus
    /// two Halley steps on erf. Gaussian top-k turns a target sparsity into a std-dev cutoff with it.</summary>
    public static double NormalInverseCdf(double p)
    {
        if (!(p > 0 && p < 1)) return p == 0 ? double.NegativeInfinity : p == 1 ? double.PositiveInfinity : double.NaN;
        double[] a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00];
        double[] b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01];
        double[] cc = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00];
        double[] d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00];
        double x;
        if (p < 0.02425)
        {
            double q = Math.Sqrt(-2 * Math.Log(p));
            x = (((((cc[0] * q + cc[1]) * q + cc[2]) * q + cc[3]) * q + cc[4]) * q + cc[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        }
        else if (p <= 1 - 0.02425)
        {
            double q = p - 0.5, r = q * q;
            x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
        }
        else
        {
            double q = Math.Sqrt(-2 * Math.Log(1 - p));
            x = -(((((cc[0] * q + cc[1]) * q + cc[2]) * q + cc[3]) * q + cc[4]) * q + cc[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        }
        for (int it = 0; it < 2; it++)
        {
            double e = 0.5 * (1 + Erf(x / Math.Sqrt(2))) - p;
            double u = e * Math.Sqrt(2 * Math.PI) * Math.Exp(x * x / 2);
            x -= u / (1 + x * u / 2);
        }
        return x;
    }
}
