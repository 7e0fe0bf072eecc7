using System.Reflection;
using System.Reflection.Emit;
// Finds TorchSharp methods that make a Scalar (op_Implicit / ToScalar / new Scalar) and never dispose one,
// then everything public that reaches such a method through TorchSharp-internal calls.
var path = args[0];
var asm = Assembly.LoadFrom(path);
var oneByte = new Dictionary<short, OpCode>(); var twoByte = new Dictionary<short, OpCode>();
foreach (var f in typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)) {
  var oc = (OpCode)f.GetValue(null)!; if (oc.Size == 1) oneByte[oc.Value] = oc; else twoByte[(short)(oc.Value & 0xff)] = oc; }
Type[] types; try { types = asm.GetTypes(); } catch (ReflectionTypeLoadException e) { types = e.Types.Where(t => t != null).ToArray()!; }
var scalarT = asm.GetType("TorchSharp.Scalar")!;
var calls = new Dictionary<MethodBase, List<MethodBase>>();
var makes = new HashSet<MethodBase>(); var disposes = new HashSet<MethodBase>();
const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
foreach (var t in types) foreach (var m in t.GetMethods(all).Cast<MethodBase>().Concat(t.GetConstructors(all))) {
  MethodBody? body; try { body = m.GetMethodBody(); } catch { continue; } if (body == null) continue;
  var il = body.GetILAsByteArray()!; var list = new List<MethodBase>(); int i = 0;
  while (i < il.Length) {
    OpCode oc; if (il[i] == 0xFE) { oc = twoByte[il[i + 1]]; i += 2; } else { oc = oneByte[il[i]]; i += 1; }
    int size = oc.OperandType switch { OperandType.InlineNone => 0, OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
      OperandType.InlineVar => 2, OperandType.InlineI8 or OperandType.InlineR => 8, OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i), _ => 4 };
    if (oc.OperandType == OperandType.InlineMethod) {
      try { var target = m.Module.ResolveMethod(BitConverter.ToInt32(il, i), m.DeclaringType?.IsGenericType == true ? m.DeclaringType.GetGenericArguments() : null, m.IsGenericMethod ? m.GetGenericArguments() : null);
        if (target != null) { list.Add(target);
          var rt = (target as MethodInfo)?.ReturnType;
          if ((target.Name == "op_Implicit" || target.Name == "ToScalar") && rt == scalarT) makes.Add(m);
          if (target is ConstructorInfo && target.DeclaringType == scalarT) makes.Add(m);
          if (target.Name == "Dispose" && (target.DeclaringType == scalarT || target.DeclaringType == typeof(IDisposable))) disposes.Add(m); } } catch { }
    }
    i += size;
  }
  calls[m] = list;
}
var bad = new HashSet<MethodBase>(makes.Where(m => !disposes.Contains(m) && !(m.DeclaringType == scalarT) && m.DeclaringType?.Name != "ScalarExtensionMethods"));
bool changed = true;
while (changed) { changed = false;
  foreach (var (m, list) in calls) if (!bad.Contains(m) && list.Any(bad.Contains) && m.DeclaringType != scalarT && m.DeclaringType?.Name != "ScalarExtensionMethods") { bad.Add(m); changed = true; } }
static bool Visible(MethodBase m) => (m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly) && IsVisibleType(m.DeclaringType);
static bool IsVisibleType(Type? t) => t != null && (t.IsPublic || (t.IsNestedPublic && IsVisibleType(t.DeclaringType)));
foreach (var m in bad.Where(Visible).OrderBy(m => m.DeclaringType!.FullName).ThenBy(m => m.Name))
  { try { Console.WriteLine(DocId(m)); } catch (Exception e) { Console.Error.WriteLine("skip " + m.Name + " " + e.GetType().Name); } }
static string TypeId(Type t) {
  if (t.IsByRef) return TypeId(t.GetElementType()!) + "@";
  if (t.IsArray) return TypeId(t.GetElementType()!) + "[]";
  if (t.IsGenericParameter) return (t.DeclaringMethod != null ? "``" : "`") + t.GenericParameterPosition;
  if (t.IsGenericType) { var def = t.GetGenericTypeDefinition(); var n = def.FullName!; n = n[..n.IndexOf('`')]; return n.Replace('+', '.') + "{" + string.Join(",", t.GetGenericArguments().Select(TypeId)) + "}"; }
  return t.FullName!.Replace('+', '.'); }
static string DocId(MethodBase m) {
  var name = m is ConstructorInfo ? "#ctor" : m.Name;
  var s = "M:" + m.DeclaringType!.FullName!.Replace('+', '.') + "." + name + (m.IsGenericMethod ? "``" + m.GetGenericArguments().Length : "");
  var ps = m.GetParameters(); if (ps.Length > 0) s += "(" + string.Join(",", ps.Select(p => TypeId(p.ParameterType))) + ")";
  if (m.Name is "op_Implicit" or "op_Explicit") s += "~" + TypeId(((MethodInfo)m).ReturnType);
  return s; }
foreach (var m in scalarT.GetMethods(BindingFlags.Public | BindingFlags.Static).Where(m => m.Name == "op_Implicit"))
  Console.WriteLine(DocId(m));
foreach (var m in asm.GetType("TorchSharp.ScalarExtensionMethods")!.GetMethods(BindingFlags.Public | BindingFlags.Static).Where(m => m.Name == "ToScalar"))
  Console.WriteLine(DocId(m));
