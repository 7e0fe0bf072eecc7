using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Operations;

namespace Mechanist.Analyzers;

/// <summary>
/// MECH003: a TorchSharp <c>Generator</c> created anywhere but the initializer of a <c>using</c> declaration or statement.
/// A Generator has a finalizer that frees its native RNG: passed inline (<c>randperm(n, generator: new Generator(0))</c>) or held
/// in a local past its last use, it is unreachable while libtorch still draws from it, and a collection on another thread frees it
/// mid-call (a segfault under GC pressure). <c>using var g = new Generator(seed);</c> keeps it alive to the end of the scope.
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class UnownedGeneratorAnalyzer : DiagnosticAnalyzer
{
    /// <summary>The rule.</summary>
    public static readonly DiagnosticDescriptor Rule = new(
        "MECH003", "A Generator not owned by a using",
        "Create this Generator in a using declaration ('using var g = new Generator(seed);'): its finalizer can free the native RNG while libtorch still draws from it",
        "Reliability", DiagnosticSeverity.Error, isEnabledByDefault: true);

    /// <inheritdoc/>
    public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics => ImmutableArray.Create(Rule);

    /// <inheritdoc/>
    public override void Initialize(AnalysisContext context)
    {
        context.ConfigureGeneratedCodeAnalysis(GeneratedCodeAnalysisFlags.None);
        context.EnableConcurrentExecution();
        context.RegisterOperationAction(op =>
        {
            var creation = (IObjectCreationOperation)op.Operation;
            if (creation.Type is not { Name: "Generator" } type || type.ContainingType?.Name != "torch"
                || type.ContainingNamespace?.Name != "TorchSharp") return;
            if (!OwnedByUsing(creation)) op.ReportDiagnostic(Diagnostic.Create(Rule, creation.Syntax.GetLocation()));
        }, OperationKind.ObjectCreation);
    }

    private static bool OwnedByUsing(IOperation creation)
    {
        var parent = creation.Parent;
        // seed is { } s ? new Generator(s) : null, and the conversions around it, still initialize the using's variable.
        while (parent is IConversionOperation or IConditionalOperation or ICoalesceOperation) parent = parent.Parent;
        if (parent is not IVariableInitializerOperation { Parent: IVariableDeclaratorOperation { Parent: IVariableDeclarationOperation declaration } })
            return false;
        var owner = declaration.Parent is IVariableDeclarationGroupOperation group ? group.Parent : declaration.Parent;
        return owner is IUsingDeclarationOperation or IUsingOperation;
    }
}
