using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>
/// The edges of an attribution graph in compressed sparse rows: row = target node, column = source node, only
/// the edges kept. Memory grows with the edges, never with n². <see cref="DroppedAbs"/> holds, per row, the
/// absolute mass of the edges not kept (a per-row cap or magnitude cut), so normalised rows still divide by
/// the row's true total.
/// </summary>
public sealed class SparseAdjacency
{
    /// <summary>Number of nodes (rows and columns).</summary>
    public int Size { get; }

    /// <summary>Row r's edges are <c>[RowStart[r], RowStart[r + 1])</c>.</summary>
    public long[] RowStart { get; }

    /// <summary>Source node of each edge, ascending within a row.</summary>
    public int[] Column { get; }

    /// <summary>Weight of each edge.</summary>
    public float[] Value { get; }

    /// <summary>Per row, Σ|weight| of the edges that were computed but not kept.</summary>
    public double[] DroppedAbs { get; }

    /// <summary>Number of stored edges.</summary>
    public long Count => Column.LongLength;

    /// <summary>Bytes the edges take (row offsets, columns, values, dropped mass).</summary>
    public long Bytes => RowStart.LongLength * 8 + Column.LongLength * 4 + Value.LongLength * 4 + DroppedAbs.LongLength * 8;

    /// <summary>Wraps CSR arrays (columns ascending within each row).</summary>
    public SparseAdjacency(int size, long[] rowStart, int[] column, float[] value, double[]? droppedAbs = null)
    {
        if (rowStart.Length != size + 1 || column.Length != value.Length || rowStart[^1] != column.Length)
            throw new ArgumentException("inconsistent CSR arrays");
        Size = size; RowStart = rowStart; Column = column; Value = value; DroppedAbs = droppedAbs ?? new double[size];
    }

    /// <summary>The nonzero entries of a dense [n, n] matrix.</summary>
    public static SparseAdjacency FromDense(Tensor dense)
    {
        int n = (int)dense.shape[0];
        var values = dense.to(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
        var b = new Builder(n);
        var row = new float[n];
        for (int r = 0; r < n; r++)
        {
            Array.Copy(values, (long)r * n, row, 0, n);
            b.SetRow(r, row);
        }
        return b.Build();
    }

    /// <summary>The dense [n, n] float32 matrix (for small graphs and tests).</summary>
    public Tensor ToDense()
    {
        var dense = new float[(long)Size * Size];
        for (int r = 0; r < Size; r++)
            for (long e = RowStart[r]; e < RowStart[r + 1]; e++) dense[(long)r * Size + Column[e]] = Value[e];
        return tensor(dense, new long[] { Size, Size });
    }

    /// <summary>The weight of edge source → target (0 when not stored).</summary>
    public float this[int target, int source]
    {
        get
        {
            int i = Array.BinarySearch(Column, (int)RowStart[target], (int)(RowStart[target + 1] - RowStart[target]), source);
            return i >= 0 ? Value[i] : 0f;
        }
    }

    /// <summary>Row r's Σ|weight| including the dropped mass.</summary>
    public double RowAbsSum(int r)
    {
        double s = DroppedAbs[r];
        for (long e = RowStart[r]; e < RowStart[r + 1]; e++) s += Math.Abs(Value[e]);
        return s;
    }

    /// <summary>Keeps the rows and columns of <paramref name="keep"/> (in that order); edges from removed nodes are gone.</summary>
    public SparseAdjacency Select(IReadOnlyList<int> keep)
    {
        var map = new int[Size];
        Array.Fill(map, -1);
        for (int i = 0; i < keep.Count; i++) map[keep[i]] = i;
        var rowStart = new long[keep.Count + 1];
        var cols = new List<int>(); var vals = new List<float>(); var dropped = new double[keep.Count];
        for (int i = 0; i < keep.Count; i++)
        {
            int r = keep[i];
            var pairs = new List<(int, float)>();
            for (long e = RowStart[r]; e < RowStart[r + 1]; e++)
                if (map[Column[e]] >= 0) pairs.Add((map[Column[e]], Value[e]));
            pairs.Sort((a, b) => a.Item1.CompareTo(b.Item1));
            foreach (var (c, v) in pairs) { cols.Add(c); vals.Add(v); }
            rowStart[i + 1] = cols.Count;
            dropped[i] = DroppedAbs[r];
        }
        return new SparseAdjacency(keep.Count, rowStart, cols.ToArray(), vals.ToArray(), dropped);
    }

    /// <summary>
    /// Collects rows in any order. Exact zeros are never edges, and with <c>maxPerRow</c> only the largest |weights| are kept, the
    /// rest counted in <see cref="DroppedAbs"/>. Without a cap, a row given as runs of consecutive columns is kept as it came (its
    /// values side by side, 4 bytes a column, zeros skipped when read): half the memory of column–value pairs, and one copy.
    /// </summary>
    public sealed class Builder(int size, int? maxPerRow = null)
    {
        readonly StoredRow?[] _rows = new StoredRow?[size];

        /// <summary>Sets row <paramref name="r"/> from its dense values (length = size).</summary>
        public void SetRow(int r, ReadOnlySpan<float> dense) => SetRow(r, dense, new[] { (0, dense.Length) });

        /// <summary>
        /// Sets row <paramref name="r"/> from the values of some runs of consecutive columns, side by side in <paramref name="values"/>
        /// (runs in ascending order, disjoint); every column outside them is zero. The runs are kept, not copied: the caller does
        /// not change them afterwards (rows of one backward pass share them).
        /// </summary>
        public void SetRow(int r, ReadOnlySpan<float> values, IReadOnlyList<(int Start, int Length)> runs)
        {
            int total = Columns(values.Length, runs);
            if (maxPerRow is not { } cap)
            {
                // (Every entry is written: no zeroing of what can be large arrays.)
                var kept = GC.AllocateUninitializedArray<float>(total);
                values.CopyTo(kept);
                _rows[r] = new StoredRow(null, kept, runs, 0);
                return;
            }
            int nonzero = total - CountZeros(values);
            var cols = GC.AllocateUninitializedArray<int>(nonzero); var vals = GC.AllocateUninitializedArray<float>(nonzero);
            int written = 0, at = 0;
            foreach (var (start, length) in runs)
                for (int i = 0; i < length; i++, at++)
                    if (values[at] != 0) { cols[written] = start + i; vals[written] = values[at]; written++; }
            double dropped = 0;
            if (nonzero > cap)
            {
                var mags = new float[nonzero];
                for (int i = 0; i < nonzero; i++) mags[i] = Math.Abs(vals[i]);
                float cut = Selection.KthLargest(mags, cap);       // keep |v| > cut, and ties at cut until cap
                var keepCols = new int[cap]; var keepVals = new float[cap];
                int k = 0, ties = cap - mags.Count(m => m > cut);
                for (int i = 0; i < nonzero; i++)
                {
                    float m = Math.Abs(vals[i]);
                    if (m > cut || (m == cut && ties-- > 0)) { keepCols[k] = cols[i]; keepVals[k] = vals[i]; k++; }
                    else dropped += m;
                }
                cols = keepCols; vals = keepVals;
            }
            _rows[r] = new StoredRow(cols, vals, null, dropped);
        }

        /// <summary>
        /// <see cref="SetRow(int, ReadOnlySpan{float}, IReadOnlyList{ValueTuple{int, int}})"/> for values the builder may keep as they
        /// are: <paramref name="values"/> is not copied where rows are not capped (the caller no longer uses it).
        /// </summary>
        internal void AdoptRow(int r, float[] values, IReadOnlyList<(int Start, int Length)> runs)
        {
            if (maxPerRow is not null) { SetRow(r, values, runs); return; }
            Columns(values.Length, runs);
            _rows[r] = new StoredRow(null, values, runs, 0);
        }

        /// <summary>The columns <paramref name="runs"/> cover, checked: ascending, disjoint, within the row, as many as the values.</summary>
        int Columns(int values, IReadOnlyList<(int Start, int Length)> runs)
        {
            int total = 0, end = 0;
            foreach (var (start, length) in runs)
            {
                if (start < end || length < 0 || start + length > size) throw new ArgumentException("runs must be ascending, disjoint and within the row", nameof(runs));
                end = start + length; total += length;
            }
            if (values != total) throw new ArgumentException($"{values} values for runs of {total} columns", "values");
            return total;
        }

        /// <summary>How many entries of <paramref name="values"/> are exactly zero (eight at a time).</summary>
        static int CountZeros(ReadOnlySpan<float> values)
        {
            int zeros = 0, i = 0;
            if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated)
                for (; i + 8 <= values.Length; i += 8)
                {
                    var v = System.Runtime.Intrinsics.Vector256.Create(values.Slice(i, 8));
                    zeros += System.Numerics.BitOperations.PopCount(System.Runtime.Intrinsics.Vector256.ExtractMostSignificantBits(System.Runtime.Intrinsics.Vector256.Equals(v, System.Runtime.Intrinsics.Vector256<float>.Zero)));
                }
            for (; i < values.Length; i++) if (values[i] == 0) zeros++;
            return zeros;
        }

        /// <summary>Row <paramref name="r"/> as set, or null if never set.</summary>
        internal StoredRow? Row(int r) => _rows[r];

        /// <summary>
        /// The CSR matrix over the nodes <paramref name="keep"/> (ascending) alone: what <see cref="Build()"/> then
        /// <see cref="SparseAdjacency.Select"/> give, without assembling the whole matrix first (rows in parallel).
        /// </summary>
        public SparseAdjacency Build(IReadOnlyList<int> keep)
        {
            var map = new int[size];
            Array.Fill(map, -1);
            for (int i = 0; i < keep.Count; i++)
            {
                if (i > 0 && keep[i] <= keep[i - 1]) throw new ArgumentException("the kept nodes must be ascending", nameof(keep));
                map[keep[i]] = i;
            }
            var counts = new long[keep.Count];
            Parallel.For(0, keep.Count, i =>
            {
                if (_rows[keep[i]] is not { } row) return;
                long c = 0;
                foreach (var (col, _) in row) if (map[col] >= 0) c++;
                counts[i] = c;
            });
            var rowStart = new long[keep.Count + 1];
            for (int i = 0; i < keep.Count; i++) rowStart[i + 1] = rowStart[i] + counts[i];
            var cols = new int[rowStart[keep.Count]]; var vals = new float[rowStart[keep.Count]]; var dropped = new double[keep.Count];
            // A row's columns ascend and the map keeps their order: each row is filtered in place, no sort.
            Parallel.For(0, keep.Count, i =>
            {
                if (_rows[keep[i]] is not { } row) return;
                long at = rowStart[i];
                foreach (var (col, value) in row)
                    if (map[col] is var c && c >= 0) { cols[at] = c; vals[at] = value; at++; }
                dropped[i] = row.Dropped;
            });
            return new SparseAdjacency(keep.Count, rowStart, cols, vals, dropped);
        }

        /// <summary>The CSR matrix; rows never set are empty.</summary>
        public SparseAdjacency Build() => Build(Enumerable.Range(0, size).ToArray());
    }

    /// <summary>
    /// A row as the builder keeps it: column–value pairs (<see cref="Cols"/> set; a capped row), or the values of runs of consecutive
    /// columns side by side (<see cref="Runs"/> set), where exact zeros are not edges.
    /// </summary>
    internal sealed record StoredRow(int[]? Cols, float[] Vals, IReadOnlyList<(int Start, int Length)>? Runs, double Dropped)
    {
        /// <summary>The row's edges, (column, weight), columns ascending: its pairs, or its runs' nonzero values.</summary>
        public EdgeEnumerator GetEnumerator() => new(this);
    }

    /// <summary>Walks a <see cref="StoredRow"/>'s edges without allocating (exact zeros of a row kept as runs are not edges).</summary>
    internal struct EdgeEnumerator(StoredRow row)
    {
        int _at = -1, _run = -1, _end, _shift;       // _at indexes Vals; the current run ends at _end, its columns are index + _shift

        /// <summary>The current edge.</summary>
        public (int Column, float Weight) Current { get; private set; }

        /// <summary>Moves to the next edge.</summary>
        public bool MoveNext()
        {
            var vals = row.Vals;
            if (row.Cols is { } cols)
            {
                if (++_at >= cols.Length) return false;
                Current = (cols[_at], vals[_at]);
                return true;
            }
            while (true)
            {
                while (++_at < _end)
                    if (vals[_at] != 0) { Current = (_at + _shift, vals[_at]); return true; }
                _at--;
                if (++_run >= row.Runs!.Count) return false;
                var (start, length) = row.Runs[_run];
                _shift = start - (_at + 1); _end = _at + 1 + length;
            }
        }
    }
}

/// <summary>Selection without a full sort (expected linear time).</summary>
public static class Selection
{
    /// <summary>The k-th largest value (1-based) of <paramref name="values"/>; the array is reordered.</summary>
    public static float KthLargest(float[] values, int k)
    {
        int lo = 0, hi = values.Length - 1, target = k - 1;
        var rng = new Random(12345);
        while (true)
        {
            if (lo == hi) return values[lo];
            float pivot = values[rng.Next(lo, hi + 1)];
            // Three-way partition into > pivot, == pivot, < pivot (descending).
            int lt = lo, i = lo, gt = hi;
            while (i <= gt)
            {
                if (values[i] > pivot) (values[lt], values[i]) = (values[i++], values[lt++]);
                else if (values[i] < pivot) (values[i], values[gt]) = (values[gt--], values[i]);
                else i++;
            }
            if (target < lt) hi = lt - 1;
            else if (target > gt) lo = gt + 1;
            else return pivot;
        }
    }

    /// <summary>
    /// circuit-tracer's cumulative threshold without sorting: the value v of the sorted-descending sequence at the first
    /// place where the running sum reaches <paramref name="fraction"/> of the total (values ≥ 0). Reorders the array.
    /// </summary>
    public static double CumulativeThreshold(double[] values, double fraction)
    {
        if (values.Length == 0) return 0;
        double total = 0, min = double.PositiveInfinity;
        foreach (var v in values) { total += v; min = Math.Min(min, v); }
        double above = 0;
        int lo = 0, hi = values.Length - 1;
        var rng = new Random(12345);
        while (lo <= hi)
        {
            double pivot = values[rng.Next(lo, hi + 1)];
            int lt = lo, i = lo, gt = hi;
            double sumGreater = 0, sumEqual = 0;
            while (i <= gt)
            {
                if (values[i] > pivot) { sumGreater += values[i]; (values[lt], values[i]) = (values[i], values[lt]); lt++; i++; }
                else if (values[i] < pivot) { (values[i], values[gt]) = (values[gt], values[i]); gt--; }
                else { sumEqual += values[i]; i++; }
            }
            if ((above + sumGreater) / total >= fraction && lt > lo) { hi = lt - 1; continue; }
            if ((above + sumGreater + sumEqual) / total >= fraction) return pivot;
            above += sumGreater + sumEqual;
            lo = gt + 1;
        }
        return min; // the running share never reached the fraction (rounding): the smallest value, as the sorted version gives
    }
}
