#!/usr/bin/env python3
"""The AVX-512 dot kernels keep their sums in registers: no innermost loop that multiplies and adds
(vfmadd*, vdpbf16ps, vpdpwssd, vpdpbusd) stores more than MAX_SPILLS vector registers to the stack
(a spill or two under register pressure is the compiler's choice: the VNNI tiles of 8 tokens and of
four quads × 2 tokens hold 26 registers; storing a tile's sums, 4 to 24 registers, is not).

Why: when a kernel's result loop indexed its sum array with something the compiler could not see
(a row count known at run time, a loop not unrolled), GCC 12 kept the array in memory and stored
every sum at every step of the main loop: up to 24 stores per 24 multiply-adds, which cost the
float32 dots of 4-5 tokens 18-26% on a Zen 5 (README "The sums stay in registers"). This reads
the optimised build's disassembly (objdump) so that such a change fails here, naming the function.

Usage: kernel_sums_in_registers_test.py LIBMOE_KERNELS.a BUILD_TYPE COMPILER_ID
Exit 77 (skipped) unless the build is an optimised GCC one (Release): debug and sanitizer builds
keep everything on the stack by design.
"""
import re
import subprocess
import sys

# The objects whose loops hold their sums in zmm registers (the AVX2 sets have 16 registers and
# spill some by necessity; the AMX kernels keep their sums in tiles).
CHECKED = ("row_dot_kernel_avx512.cc.o", "row_streams_f32_avx512.cc.o",
           "row_dot_kernel_avx512vnni.cc.o", "bf16_dot_kernel_avx512bf16.cc.o")
MULTIPLY_ADD = re.compile(r"v(fmadd|fnmadd)\w*ps|vdpbf16ps|vpdpwssd|vpdpbusd")
STACK_STORE = re.compile(r"vmov\w+\s+%[xyz]mm\d+,-?0x[0-9a-f]+\(%rsp\)")
BACKWARD_JUMP = re.compile(r"j\w+\s+([0-9a-f]+) <")
MAX_SPILLS = 2


def functions(disassembly):
    """(object, function, [(address, instruction)]) for every function of CHECKED objects."""
    member = None
    for block in re.split(r"\n(?=[0-9a-f]+ <|\S+\.o:\s+file format)", disassembly):
        header = re.match(r"(\S+\.o):\s+file format", block)
        if header:
            member = header.group(1)
            continue
        name = re.match(r"[0-9a-f]+ <(.*)>:", block)
        if not name or member not in CHECKED:
            continue
        instructions = []
        for line in block.splitlines()[1:]:
            parsed = re.match(r"\s*([0-9a-f]+):\s*(.*)", line)
            if parsed:
                instructions.append((int(parsed.group(1), 16), parsed.group(2)))
        yield member, name.group(1), instructions


def innermost_loops(instructions):
    """[start, end] address ranges of backward jumps that contain no other backward jump."""
    loops = []
    for address, text in instructions:
        jump = BACKWARD_JUMP.match(text)
        if jump and int(jump.group(1), 16) < address:
            loops.append((int(jump.group(1), 16), address))
    return [(s, e) for s, e in loops
            if not any((s, e) != (s2, e2) and s <= s2 and e2 <= e for s2, e2 in loops)]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    library, build_type, compiler = sys.argv[1:]
    if build_type != "Release" or compiler != "GNU":
        print(f"SKIPPED: only an optimised GCC build is checked (this one: {build_type}, {compiler})")
        return 77
    disassembly = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", library],
                                 check=True, capture_output=True, text=True).stdout
    checked, failures = 0, []
    for member, name, instructions in functions(disassembly):
        for start, end in innermost_loops(instructions):
            body = [text for address, text in instructions if start <= address <= end]
            if not any(MULTIPLY_ADD.match(text) for text in body):
                continue
            checked += 1
            stores = sum(1 for text in body if STACK_STORE.match(text))
            if stores > MAX_SPILLS:
                failures.append(f"{member}: {name}: a loop of {len(body)} instructions stores "
                                f"{stores} vector registers to the stack")
    if checked == 0:
        print(f"FAILED: no multiply-add loop found in {', '.join(CHECKED)} of {library}")
        return 1
    for failure in failures:
        print("FAILED:", failure)
    print(f"{checked} multiply-add loops checked, {len(failures)} store more than {MAX_SPILLS} "
          "vector registers to the stack")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
