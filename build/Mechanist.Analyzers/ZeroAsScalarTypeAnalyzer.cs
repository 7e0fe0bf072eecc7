using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Operations;

namespace Mechanist.Analyzers;

/// <summary>
/// MECH002: the literal <c>0</c> passed where TorchSharp expects a <c>ScalarType</c>. C# converts the literal 0 (and only it) to any
/// enum, so <c>t.sum(0)</c> binds to <c>sum(ScalarType type)</c> and sums every element into a uint8 instead of summing over dimension 0.
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class ZeroAsScalarTypeAnalyzer : DiagnosticAnalyzer
{
    /// <summary>The rule.</summary>
    public static readonly DiagnosticDescriptor Rule = new(
        "MECH002", "The literal 0 passed as a ScalarType",
        "'{0}' receives the literal 0 as its ScalarType parameter '{1}' (C# converts 0 to any enum): write 0L for a dimension, or ScalarType.Byte if a dtype is meant",
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
            var arg = (IArgumentOperation)op.Operation;
            if (arg.IsImplicit || arg.Parameter is null) return;
            var type = arg.Parameter.Type is INamedTypeSymbol { OriginalDefinition.SpecialType: SpecialType.System_Nullable_T } nullable ? nullable.TypeArguments[0] : arg.Parameter.Type;
            if (type.Name != "ScalarType" || type.TypeKind != TypeKind.Enum) return;
            var value = arg.Value is IConversionOperation { IsImplicit: true } c ? c.Operand : arg.Value;
            if (value is ILiteralOperation literal && literal.ConstantValue.HasValue && literal.ConstantValue.Value is int zero && zero == 0)
                op.ReportDiagnostic(Diagnostic.Create(Rule, arg.Syntax.GetLocation(), arg.Parameter.ContainingSymbol.ToDisplayString(), arg.Parameter.Name));
        }, OperationKind.Argument);
    }
}
