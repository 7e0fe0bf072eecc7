using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Operations;

namespace Mechanist.Analyzers;

/// <summary>
/// MECH001: a compound assignment (<c>t += u</c>, <c>t *= 2.0</c>) or increment whose operator is listed in a
/// <c>BannedSymbols*.txt</c> additional file. The banned-API analyzer checks invocations, conversions and operators in
/// binary expressions, but not the operator a compound assignment calls.
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class BannedCompoundAssignmentAnalyzer : DiagnosticAnalyzer
{
    /// <summary>The rule.</summary>
    public static readonly DiagnosticDescriptor Rule = new(
        "MECH001", "Banned operator in a compound assignment",
        "'{0}' is banned: {1}", "Reliability", DiagnosticSeverity.Error, isEnabledByDefault: true);

    /// <inheritdoc/>
    public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics => ImmutableArray.Create(Rule);

    /// <inheritdoc/>
    public override void Initialize(AnalysisContext context)
    {
        context.ConfigureGeneratedCodeAnalysis(GeneratedCodeAnalysisFlags.None);
        context.EnableConcurrentExecution();
        context.RegisterCompilationStartAction(start =>
        {
            var banned = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var file in start.Options.AdditionalFiles)
            {
                var name = System.IO.Path.GetFileName(file.Path);
                if (!name.StartsWith("BannedSymbols", StringComparison.OrdinalIgnoreCase)) continue;
                var text = file.GetText(start.CancellationToken);
                if (text is null) continue;
                foreach (var line in text.Lines.Select(l => l.ToString().Trim()))
                {
                    if (line.Length == 0 || line[0] == '#') continue;
                    int semi = line.IndexOf(';');
                    banned[semi < 0 ? line : line.Substring(0, semi).Trim()] = semi < 0 ? "banned" : line.Substring(semi + 1).Trim();
                }
            }
            if (banned.Count == 0) return;
            start.RegisterOperationAction(op =>
            {
                var method = op.Operation switch
                {
                    ICompoundAssignmentOperation c => c.OperatorMethod,
                    IIncrementOrDecrementOperation i => i.OperatorMethod,
                    _ => null,
                };
                if (method?.GetDocumentationCommentId() is { } id && banned.TryGetValue(id, out var why))
                    op.ReportDiagnostic(Diagnostic.Create(Rule, op.Operation.Syntax.GetLocation(), method.ToDisplayString(), why));
            }, OperationKind.CompoundAssignment, OperationKind.Increment, OperationKind.Decrement);
        });
    }
}
