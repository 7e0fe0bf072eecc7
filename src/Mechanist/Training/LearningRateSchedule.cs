namespace Mechanist.Training;

/// <summary>A learning rate per step.</summary>
public abstract record LearningRateSchedule
{
    /// <summary>The learning rate at step <paramref name="step"/> (0-based).</summary>
    public abstract double At(int step);

    /// <summary>The same rate at every step.</summary>
    public sealed record Constant(double Rate) : LearningRateSchedule
    {
        /// <inheritdoc/>
        public override double At(int step) => Rate;
    }

    /// <summary>Linear warm-up to <paramref name="Peak"/>, then cosine decay to <paramref name="Floor"/>·peak at <paramref name="Steps"/>.</summary>
    /// <param name="Peak">Peak rate.</param>
    /// <param name="WarmupSteps">Warm-up steps (step 0 runs at peak / warm-up).</param>
    /// <param name="Steps">Total steps.</param>
    /// <param name="Floor">Final rate as a fraction of the peak.</param>
    public sealed record WarmupCosine(double Peak, int WarmupSteps, int Steps, double Floor = 0.1) : LearningRateSchedule
    {
        /// <inheritdoc/>
        public override double At(int step)
        {
            if (step < WarmupSteps) return Peak * (step + 1) / WarmupSteps;
            double progress = (double)(step - WarmupSteps) / Math.Max(1, Steps - WarmupSteps);
            return Peak * (Floor + (1 - Floor) * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1, progress))));
        }
    }
}
