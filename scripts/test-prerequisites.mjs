#!/usr/bin/env node
// The programs from Debian that the test suites run as independent peers (openssl, python3-h2, nghttp,
// the Prometheus parser, promtool, a headless chromium, dig, dnsmasq, RE2 through Perl's re::engine::RE2)
// or use for namespaces and load (ip, iptables, iperf3, haproxy). This is the one list: `pnpm test` runs
// this script first and `.ci/run` runs it to set a machine up.
//
// Each package is probed by what the tests actually call. If something is missing and we are root (or
// have passwordless sudo) on a machine with apt-get, it is installed; otherwise the script stops at once
// with the exact command to run. Nothing is skipped: a missing program is an error, never a quiet skip.
//   node scripts/test-prerequisites.mjs           check, install what is missing when possible
//   node scripts/test-prerequisites.mjs --check   check only; never install
//   node scripts/test-prerequisites.mjs --list    print the Debian package names, one a line
import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

/** The tests run python through this exact path, so a python3 elsewhere on PATH does not count. */
const PYTHON = "/usr/bin/python3";

/**
 * Debian package -> what proves it is there: programs (found on PATH, /usr/sbin or /sbin), python
 * modules (importable by /usr/bin/python3) and perl modules (loaded by `perl -M<module> -e 1`). `why` is
 * printed when it is missing.
 */
const PREREQUISITES = [
  { pkg: "openssl", programs: ["openssl"], why: "certificate interop (spiffe, hbone, xds)" },
  { pkg: "python3", programs: [PYTHON], why: "runs the python interop peers" },
  { pkg: "python3-h2", modules: ["h2", "hpack"], why: "an independent HTTP/2 and HPACK stack (hbone)" },
  {
    pkg: "python3-prometheus-client",
    modules: ["prometheus_client"],
    why: "the Prometheus parser (telemetry)",
  },
  { pkg: "nghttp2-client", programs: ["nghttp", "h2load"], why: "a second HTTP/2 peer and load (router)" },
  { pkg: "iproute2", programs: ["ip"], why: "network namespaces for fault tests" },
  { pkg: "iptables", programs: ["iptables"], why: "traffic redirection in network namespaces" },
  { pkg: "iperf3", programs: ["iperf3"], why: "bounded throughput checks through tunnels" },
  { pkg: "haproxy", programs: ["haproxy"], why: "an independent proxy as a peer" },
  { pkg: "bind9-dnsutils", programs: ["dig"], why: "an independent DNS client (dns, ztunnel's DNS proxy)" },
  { pkg: "dnsmasq-base", programs: ["dnsmasq"], why: "an independent upstream DNS server (dns)" },
  // Only promtool is used (19 MB download, 96 MB installed). The package also ships the Prometheus server
  // and an init script; apt does not start it where no init runs (containers, CI), since invoke-rc.d finds
  // no runlevel there and refuses the start, as does a Docker image's policy-rc.d.
  { pkg: "prometheus", programs: ["promtool"], why: "promtool check metrics lints the metric names (apps)" },
  { pkg: "chromium", programs: ["chromium"], why: "the live mesh page in a real browser (local-mesh)" },
  {
    pkg: "libre-engine-re2-perl",
    perlModules: ["re::engine::RE2"],
    why: "the system RE2 as an oracle for route regexes (router)",
  },
];

const SEARCH = [...(process.env.PATH ?? "").split(delimiter), "/usr/local/sbin", "/usr/sbin", "/sbin"];

function executable(file) {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function findProgram(name) {
  if (name.startsWith("/")) return executable(name);
  return SEARCH.some((dir) => dir !== "" && executable(join(dir, name)));
}

/** Which of `modules` /usr/bin/python3 cannot find. One python start, no module is imported. */
function missingModules(modules) {
  if (modules.length === 0) return [];
  if (!executable(PYTHON)) return modules;
  const script =
    "import importlib.util, sys\nfor m in sys.argv[1:]:\n    if importlib.util.find_spec(m) is None: print(m)";
  const res = spawnSync(PYTHON, ["-c", script, ...modules], { encoding: "utf8", timeout: 10_000 });
  if (res.status !== 0) return modules;
  return res.stdout.split("\n").filter(Boolean);
}

/** Whether perl loads `module` (which also runs its import: for a regex engine, nothing is matched). */
function perlLoads(module) {
  const res = spawnSync("perl", [`-M${module}`, "-e", "1"], { stdio: "ignore", timeout: 10_000 });
  return res.status === 0;
}

/** The Debian packages whose programs, python modules or perl modules are missing. */
function missingPackages() {
  const modules = PREREQUISITES.flatMap((p) => p.modules ?? []);
  const absent = new Set(missingModules(modules));
  return PREREQUISITES.filter(
    (p) =>
      (p.programs ?? []).some((prog) => !findProgram(prog)) ||
      (p.modules ?? []).some((m) => absent.has(m)) ||
      (p.perlModules ?? []).some((m) => !perlLoads(m)),
  );
}

function runs(cmd, args) {
  const res = spawnSync(cmd, args, { stdio: "ignore", timeout: 5_000 });
  return res.status === 0;
}

function main() {
  const args = process.argv.slice(2);
  if (args.includes("--list")) {
    for (const p of PREREQUISITES) console.log(p.pkg);
    return 0;
  }
  const checkOnly = args.includes("--check");

  let missing = missingPackages();
  if (missing.length === 0) {
    console.log(`test prerequisites: all ${PREREQUISITES.length} Debian packages present`);
    return 0;
  }
  const names = missing.map((p) => p.pkg);
  console.error("test prerequisites: missing Debian packages used by the tests:");
  for (const p of missing) console.error(`  ${p.pkg.padEnd(26)} ${p.why}`);

  const hasApt = findProgram("apt-get");
  const root = process.getuid?.() === 0;
  const sudo = !root && hasApt && findProgram("sudo") && runs("sudo", ["-n", "true"]);
  const install = `apt-get update && apt-get install -y --no-install-recommends ${names.join(" ")}`;

  if (checkOnly || !hasApt || !(root || sudo)) {
    if (!hasApt) {
      console.error(
        "\nThis machine has no apt-get: install the equivalent packages, then run the tests again.",
      );
    } else {
      const command = root ? install : `sudo ${install.replace("&& ", "&& sudo ")}`;
      console.error(`\nRun this, then run the tests again:\n\n  ${command}\n`);
    }
    return 1;
  }

  const prefix = root ? [] : ["sudo", "-n"];
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  console.error(`\ntest prerequisites: installing with ${root ? "root" : "sudo"}: ${install}`);
  for (const argv of [
    ["apt-get", "update", "-qq"],
    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", ...names],
  ]) {
    const [cmd, ...rest] = [...prefix, ...argv];
    const res = spawnSync(cmd, rest, { stdio: ["ignore", "ignore", "inherit"], env });
    if (res.status !== 0) {
      console.error(`test prerequisites: \`${argv.join(" ")}\` failed (exit ${res.status ?? res.signal})`);
      return 1;
    }
  }
  missing = missingPackages();
  if (missing.length > 0) {
    console.error(`test prerequisites: still missing after install: ${missing.map((p) => p.pkg).join(", ")}`);
    return 1;
  }
  console.log(`test prerequisites: installed ${names.join(", ")}`);
  return 0;
}

process.exitCode = main();
