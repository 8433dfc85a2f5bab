"""The command-line contract a README cannot show by running it: the README's flag tables match
every binary's --help (names and defaults), every usage line lists every flag, benchmarks and
scripts print usage texts, every flag deploy/'s compose files and Kubernetes manifests pass is
one the binary accepts, and every server name they expect is in scripts/make-certs' certificates.
Failures go to runner_processes.fail.
"""
import os
import re

from runner_processes import fail, run

BINARIES = {
    "moe_expert": "expert_service/moe_expert",
    "moe_router": "router_service/moe_router",
    "moe_make_model": "tools/moe_make_model",
    "moe_client": "tools/moe_client",
    "moe_health": "tools/moe_health",
    "moe_layer_bench": "tools/moe_layer_bench",
    "moe_placement": "tools/placement/moe_placement",
}
# Benchmarks that parse their own arguments: --help prints a usage line and exits 0.
BENCHMARKS = ["moe_roofline", "moe_decode_bench", "moe_layer_kernels_bench", "moe_kernel_ratios"]
SCRIPTS = ["bench", "bench-tls", "build", "build-images", "check-clang", "compose-up",
           "metrics-overhead", "placement-bench",
           "flood-threads", "fuzz", "go-tool", "loadtest", "make-certs", "run-local", "setup", "test"]


def parse_help(text):
    """Usage text and {flag: default} of a binary's --help."""
    usage, _, flags_text = text.partition("\nFlags:\n")
    flags = dict(re.findall(r"^  --(\w+)  \(default: (.*)\)$", flags_text, re.M))
    return usage, flags


def readme_flag_tables(readme):
    """{binary: {flag: default as written}} from the README's flag table."""
    tables, binary = {}, None
    for line in readme.split("\n"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not line.startswith("|") or "`--" not in cells[1]:
            continue
        binary = cells[0] or binary
        names = re.findall(r"`--(\w+)`", cells[1])
        defaults = [d.strip() for d in cells[2].split(",")] if len(names) > 1 else [cells[2]]
        if len(defaults) != len(names):
            fail(f"README flag table: {binary} {names}: {len(defaults)} defaults for "
                 f"{len(names)} flags")
            continue
        for name, default in zip(names, defaults):
            tables.setdefault(binary, {})[name] = default
    return tables


def normalise_default(text):
    text = text.strip().strip("`")
    if text in ("—", "(required)", '""', "-"):
        return ""
    return text.split(" ")[0]


def check_help_and_tables(source, build, readme):
    tables = readme_flag_tables(readme)
    for binary, path in BINARIES.items():
        status, output = run(f"{build}/{path} --help", cwd=build, env=os.environ)
        if status != 0:
            fail(f"{binary} --help exited {status}")
        usage, flags = parse_help(output)
        if not flags:
            fail(f"{binary} --help lists no flags:\n{output}")
        # "--allow_partial false" would turn the flag on and drop the "false" unnoticed.
        status, output = run(f"{build}/{path} stray", cwd=build, env=os.environ)
        if status != 2 or "unexpected argument 'stray'" not in output:
            fail(f"{binary} stray: exit {status}, not the unexpected-argument error:\n"
                 f"{output[:300]}")
        for name, default in flags.items():
            if f"--{name}" not in usage:
                fail(f"{binary}: the usage line does not list --{name}")
        documented = tables.get(binary, {})
        for name in sorted(set(flags) | set(documented)):
            if name not in flags:
                fail(f"README documents {binary} --{name}, which the binary does not have")
            elif name not in documented:
                fail(f"{binary} --{name} is missing from the README's flag table")
            elif normalise_default(documented[name]) != flags[name].strip('"'):
                fail(f"{binary} --{name}: README says default {documented[name]!r}, --help says "
                     f"{flags[name]}")
    for bench in BENCHMARKS:
        status, output = run(f"{build}/bench/{bench} --help", cwd=build, env=os.environ)
        if status != 0 or not output.startswith("usage: " + bench):
            fail(f"{bench} --help: exit {status}, not a usage line:\n{output[:300]}")
    # A bad value is refused before the benchmark makes gigabytes of weights.
    status, output = run(f"{build}/bench/moe_decode_bench --tokens=3,0", cwd=build, env=os.environ)
    if status != 2 or "--tokens takes token counts from 1 to 64" not in output:
        fail(f"moe_decode_bench --tokens=3,0: exit {status}, not the --tokens error:\n"
             f"{output[:300]}")
    for script in SCRIPTS:
        status, output = run(f"scripts/{script} --help", cwd=source, env=os.environ)
        if status != 0 or not output.lower().startswith("usage: scripts/" + script):
            fail(f"scripts/{script} --help: exit {status}, not a usage text:\n{output[:300]}")
        if "set -euo" in output or output.lstrip().startswith("#"):
            fail(f"scripts/{script} --help prints its own source")


def make_certs_default_names(source):
    """The names scripts/make-certs puts in every server certificate (its `san=` line)."""
    with open(os.path.join(source, "scripts", "make-certs")) as f:
        found = re.search(r'^san="([^"]+)"$', f.read(), re.M)
    if not found:
        fail("scripts/make-certs: no san=\"...\" line with the default names")
        return set()
    return {entry.split(":", 1)[1] for entry in found.group(1).split(",")}


def check_deploy_flags(source, build):
    """Every flag a compose file or Kubernetes manifest passes to a binary is one it accepts, and
    every server name it expects is one make-certs always puts in the certificate: another name
    fails TLS with the documented certificates (a probe that fails gets its pod restarted)."""
    import yaml  # python3-yaml (scripts/setup)
    helps = {}
    cert_names = make_certs_default_names(source)

    def flags_of(binary):
        if binary not in helps:
            helps[binary] = parse_help(run(f"{build}/{BINARIES[binary]} --help", cwd=build,
                                           env=os.environ)[1])[1]
        return helps[binary]

    def commands(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from commands(value)
        elif isinstance(node, list):
            names = [os.path.basename(v) if isinstance(v, str) else None for v in node]
            for i, name in enumerate(names):
                if name in BINARIES:
                    yield name, [v for v in node[i + 1:] if isinstance(v, str)]
                    break
            else:
                for value in node:
                    yield from commands(value)

    checked = 0
    for root, _, files in os.walk(os.path.join(source, "deploy")):
        for file in sorted(f for f in files if f.endswith((".yml", ".yaml"))):
            path = os.path.join(root, file)
            with open(path) as f:
                documents = list(yaml.safe_load_all(f))
            for binary, args in commands(documents):
                checked += 1
                for arg in args:
                    name = arg[2:].split("=")[0]
                    if arg.startswith("--") and name not in flags_of(binary):
                        fail(f"{os.path.relpath(path, source)}: {binary} has no flag --{name}")
                    if (name in ("tls_server_name", "shard_tls_server_name")
                            and arg.partition("=")[2] not in cert_names):
                        fail(f"{os.path.relpath(path, source)}: {binary} {arg}: scripts/make-certs"
                             f" names only {', '.join(sorted(cert_names))} unless given --san")
    if checked < 10:
        fail(f"deploy/: found only {checked} commands of the project's binaries to check")
