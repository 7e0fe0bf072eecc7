using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

/// <summary>
/// Sets VER_FLG_WEAK on one version need (e.g. GLIBCXX_3.4.32) in the .gnu.version_r section of
/// ELF64 little-endian shared libraries, so the loader accepts them where the system library lacks
/// that version. Idempotent; skipped when the system libstdc++ already defines the version.
/// </summary>
public class MarkGlibcxxVersionNeedWeak : Task
{
    const uint ShtGnuVerneed = 0x6ffffffe;
    const ushort VerFlgWeak = 0x2;

    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string VersionName { get; set; } = "";

    public override bool Execute()
    {
        if (SystemLibStdCxxHas(VersionName))
        {
            Log.LogMessage(MessageImportance.Low, $"System libstdc++ defines {VersionName}; no patch needed.");
            return true;
        }
        foreach (var item in Files)
        {
            try { PatchFile(item.ItemSpec); }
            catch (Exception e)
            {
                Log.LogError($"Could not mark {VersionName} weak in {item.ItemSpec}: {e.Message}");
                return false;
            }
        }
        return !Log.HasLoggedErrors;
    }

    static bool SystemLibStdCxxHas(string version)
    {
        string[] candidates =
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
        };
        byte[] needle = Encoding.ASCII.GetBytes(version + "\0");
        foreach (var path in candidates)
        {
            if (!File.Exists(path)) continue;
            byte[] bytes = File.ReadAllBytes(path);
            if (IndexOf(bytes, needle) >= 0) return true;
            return false;
        }
        return false;
    }

    static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= haystack.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && haystack[i + j] == needle[j]) j++;
            if (j == needle.Length) return i;
        }
        return -1;
    }

    void PatchFile(string path)
    {
        byte[] elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1) throw new InvalidDataException("not a little-endian ELF64 file");

        ulong shoff = BitConverter.ToUInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        for (int s = 0; s < shnum; s++)
        {
            long sh = (long)shoff + (long)s * shentsize;
            if (BitConverter.ToUInt32(elf, (int)sh + 4) != ShtGnuVerneed) continue;
            long offset = (long)BitConverter.ToUInt64(elf, (int)sh + 0x18);
            int link = (int)BitConverter.ToUInt32(elf, (int)sh + 0x28);
            long strtab = (long)BitConverter.ToUInt64(elf, (int)((long)shoff + (long)link * shentsize + 0x18));

            long vn = offset;
            while (true)
            {
                int count = BitConverter.ToUInt16(elf, (int)vn + 2);
                long vna = vn + BitConverter.ToUInt32(elf, (int)vn + 8);
                for (int a = 0; a < count; a++)
                {
                    string name = ReadCString(elf, strtab + BitConverter.ToUInt32(elf, (int)vna + 8));
                    if (name == VersionName)
                    {
                        ushort flags = BitConverter.ToUInt16(elf, (int)vna + 4);
                        if ((flags & VerFlgWeak) != 0)
                        {
                            Log.LogMessage(MessageImportance.Low, $"{path}: {VersionName} already weak.");
                            return;
                        }
                        BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, (int)vna + 4);
                        string tmp = path + ".patching";
                        File.WriteAllBytes(tmp, elf);
                        File.Replace(tmp, path, null); // rename: a process that has the old file mapped keeps it
                        Log.LogMessage(MessageImportance.Normal, $"{path}: marked version need {VersionName} weak.");
                        return;
                    }
                    uint nextAux = BitConverter.ToUInt32(elf, (int)vna + 12);
                    if (nextAux == 0) break;
                    vna += nextAux;
                }
                uint next = BitConverter.ToUInt32(elf, (int)vn + 12);
                if (next == 0) break;
                vn += next;
            }
        }
        Log.LogMessage(MessageImportance.Low, $"{path}: no version need on {VersionName}; left as is.");
    }

    static string ReadCString(byte[] bytes, long start)
    {
        long end = start;
        while (end < bytes.Length && bytes[end] != 0) end++;
        return Encoding.ASCII.GetString(bytes, (int)start, (int)(end - start));
    }
}
