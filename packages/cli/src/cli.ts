// The `ambient` command: argument parsing (commander), output formats and exit codes. The work itself
// is in ztunnel-config.ts, authz-check.ts and analyze.ts, which return data.
import { readFileSync } from "node:fs";
import { Command, CommanderError, Option } from "commander";
import { type AnalyzeResult, analyzeManifests } from "./analyze.js";
import { type AuthzCheckResult, authzCheck } from "./authz-check.js";
import { authzCheckLive } from "./authz-check-live.js";
import { DEFAULT_CONTROL_PLANE_ADMIN, dashboardInfo, openInBrowser } from "./dashboard.js";
import { CliError } from "./errors.js";
import { loadManifests } from "./manifests.js";
import {
  colourEnabled,
  OUTPUT_FORMATS,
  type OutputFormat,
  parseOutputFormat,
  renderData,
  renderTable,
  type Styles,
  styles,
} from "./output.js";
import {
  DEFAULT_ADMIN_ADDRESSES,
  fetchConfigDumps,
  ZTUNNEL_CONFIG_SECTIONS,
  type ZtunnelConfigSection,
  ztunnelConfig,
} from "./ztunnel-config.js";

/** Where {@link runCli} reads its environment and writes its output. */
export interface CliIo {
  stdout: { write(text: string): unknown; isTTY?: boolean };
  stderr: { write(text: string): unknown; isTTY?: boolean };
  /** Default `process.env`. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** Exit codes: 0 done, 1 `analyze` found an error or a command failed, 2 bad usage. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function outputOption(): Option {
  return new Option("-o, --output <format>", `output format: ${OUTPUT_FORMATS.join(", ")}`)
    .default("table")
    .argParser(parseOutputFormat);
}

function printAuthz(result: AuthzCheckResult, s: Styles): string {
  const verdict = result.allowed ? s.green("ALLOWED") : s.red("DENIED");
  const lines = [`${verdict}  ${result.from} -> ${result.to}`];
  result.hops.forEach((h, i) => {
    const mark = h.allowed ? s.green("allow") : s.red("deny ");
    lines.push(`  ${i + 1}. ${mark}  ${h.enforcedBy}, ${h.layer}: ${h.source} -> ${h.destination}`);
    lines.push(`            ${h.explanation}`);
  });
  for (const n of result.notes) lines.push(`  note: ${n}`);
  return `${lines.join("\n")}\n`;
}

function printAnalyze(result: AnalyzeResult, s: Styles): string {
  if (result.findings.length === 0) return `${s.green("✔")} No problems found in ${result.dir}.\n`;
  const rows = result.findings.map((f) => [
    f.severity === "error" ? s.red("Error") : s.yellow("Warning"),
    `${f.file}${f.line > 0 ? `:${f.line}` : ""}`,
    f.object,
    f.field || "-",
    `${f.message} [${f.check}]`,
  ]);
  // Colour codes would break the alignment, so the table is laid out on plain text and coloured after.
  const plain = renderTable({
    columns: ["SEVERITY", "FILE", "OBJECT", "FIELD", "MESSAGE"],
    rows: result.findings.map((f, i) => [
      f.severity === "error" ? "Error" : "Warning",
      ...(rows[i]?.slice(1) ?? []),
    ]),
  });
  const [header = "", ...body] = plain.trimEnd().split("\n");
  const coloured = body.map((line, i) =>
    result.findings[i]?.severity === "error"
      ? line.replace(/^Error/, s.red("Error"))
      : line.replace(/^Warning/, s.yellow("Warning")),
  );
  const summary = `${result.errors} error(s), ${result.warnings} warning(s) in ${result.dir}`;
  return `${[s.bold(header), ...coloured].join("\n")}\n${summary}\n`;
}

/**
 * The version in the package.json next to the code (`src/` or `dist/`), read when the program is
 * made, so it cannot drift from the published package. `"unknown"` when that file is not
 * `@ambient/cli`'s, e.g. after a bundler moved the code.
 */
function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      name?: unknown;
      version?: unknown;
    };
    if (pkg.name === "@ambient/cli" && typeof pkg.version === "string") return pkg.version;
  } catch {
    // No readable package.json there: fall through.
  }
  return "unknown";
}

/** The `ambient` program, writing to `io`. Exit codes come back through `exitOverride`. */
export function createProgram(io: CliIo, setExitCode: (code: number) => void): Command {
  const env = io.env ?? process.env;
  const s = styles(colourEnabled(io.stdout, env));
  const write = (text: string) => io.stdout.write(text);
  const program = new Command("ambient")
    .description(
      "Look at an ambient mesh: ztunnel config, authorization checks, manifest analysis, the live mesh page.",
    )
    .version(packageVersion(), "-V, --version", "print the version of @ambient/cli")
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      writeOut: (str) => io.stdout.write(str),
      writeErr: (str) => io.stderr.write(str),
    });

  program
    .command("ztunnel-config")
    .description("Show what the ztunnels hold, from their admin /config_dump (like istioctl ztunnel-config).")
    .argument("<section>", `one of ${ZTUNNEL_CONFIG_SECTIONS.join(", ")}`)
    .option("--node <name>", "only the ztunnel of this node (and, for workloads, the workloads on it)")
    .option(
      "--admin <ip:port>",
      `ztunnel admin endpoint; repeat for several (default ${DEFAULT_ADMIN_ADDRESSES.join(", ")})`,
      collect,
    )
    .option("--timeout <ms>", "deadline of each admin request in milliseconds", "5000")
    .addOption(outputOption())
    .action(
      async (
        section: string,
        opts: { node?: string; admin?: string[]; timeout: string; output: OutputFormat },
      ) => {
        const timeoutMs = Number(opts.timeout);
        if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
          throw new CliError(
            "ERR_CLI_USAGE",
            `--timeout "${opts.timeout}" is not a positive number of milliseconds`,
          );
        }
        const options: Parameters<typeof ztunnelConfig>[1] = { timeoutMs };
        if (opts.admin !== undefined) options.admins = opts.admin;
        if (opts.node !== undefined) options.node = opts.node;
        const result = await ztunnelConfig(section as ZtunnelConfigSection, options);
        for (const w of result.warnings) io.stderr.write(`warning: ${w}\n`);
        if (opts.output !== "table") write(renderData(result.items, opts.output));
        else if (result.table.rows.length === 0) write(`No ${section} found.\n`);
        else write(renderTable(result.table, s));
      },
    );

  const authz = program.command("authz").description("Authorization policy tools.");
  authz
    .command("check")
    .description(
      "Decide a call from a pod to a pod or service with the policies of a manifests folder (or, with --live, of the running ztunnels), and say why.",
    )
    .requiredOption("--from <pod>", "calling pod: name, namespace/name or name.namespace")
    .requiredOption(
      "--to <target:port>",
      "called pod or service and port, e.g. echo:80 (pod/ or svc/ prefix to choose)",
    )
    .option("--method <method>", "HTTP method, checked at a waypoint (L7)")
    .option("--path <path>", "HTTP path, checked at a waypoint (L7)")
    .option("--manifests <dir>", "folder of manifests with the pods, services and policies", ".")
    .option(
      "--live",
      "use the workloads and policies of the running ztunnels instead of --manifests (L4 only)",
    )
    .option(
      "--admin <ip:port>",
      `with --live: ztunnel admin endpoint; repeat for several (default ${DEFAULT_ADMIN_ADDRESSES.join(", ")})`,
      collect,
    )
    .option("--root-namespace <ns>", "mesh root namespace", "istio-system")
    .addOption(outputOption())
    .action(
      async (opts: {
        from: string;
        to: string;
        method?: string;
        path?: string;
        manifests: string;
        live?: boolean;
        admin?: string[];
        rootNamespace: string;
        output: OutputFormat;
      }) => {
        let result: AuthzCheckResult;
        if (opts.live === true) {
          const { dumps, warnings } = await fetchConfigDumps(opts.admin);
          for (const w of warnings) io.stderr.write(`warning: ${w}\n`);
          result = authzCheckLive(dumps, { from: opts.from, to: opts.to, rootNamespace: opts.rootNamespace });
          if (opts.method !== undefined || opts.path !== undefined) {
            result.notes.push("--live checks the ztunnels (L4) only: --method and --path were not used");
          }
        } else {
          if (opts.admin !== undefined) {
            throw new CliError("ERR_CLI_USAGE", "--admin is for --live checks: add --live, or drop --admin");
          }
          const set = await loadManifests(opts.manifests);
          const checkOptions: Parameters<typeof authzCheck>[1] = {
            from: opts.from,
            to: opts.to,
            rootNamespace: opts.rootNamespace,
          };
          if (opts.method !== undefined) checkOptions.method = opts.method;
          if (opts.path !== undefined) checkOptions.path = opts.path;
          result = authzCheck(set, checkOptions);
        }
        if (opts.output === "table") write(printAuthz(result, s));
        else {
          // The engine's decision objects carry a PolicyError on malformed requests; keep its message.
          const data = {
            ...result,
            hops: result.hops.map(({ decision, ...h }) => ({
              ...h,
              decision: { ...decision, error: decision.error?.message },
            })),
          };
          write(renderData(data, opts.output));
        }
      },
    );

  program
    .command("analyze")
    .description(
      "Report every problem in a folder of manifests, with file, object and field path (like istioctl analyze).",
    )
    .argument("<dir>", "folder of manifests")
    .option("--root-namespace <ns>", "mesh root namespace", "istio-system")
    .addOption(outputOption())
    .action(async (dir: string, opts: { rootNamespace: string; output: OutputFormat }) => {
      const result = analyzeManifests(await loadManifests(dir), { rootNamespace: opts.rootNamespace });
      write(opts.output === "table" ? printAnalyze(result, s) : renderData(result, opts.output));
      if (result.errors > 0) setExitCode(EXIT_FAILURE);
    });

  program
    .command("dashboard")
    .description(
      "Print the address of the live mesh page (served by the control plane's admin port) and open it in a browser when run at a terminal.",
    )
    .option("--admin <ip:port>", "control plane admin address", DEFAULT_CONTROL_PLANE_ADMIN)
    .option("--no-browser", "only print the address, never open a browser")
    .option("--timeout <ms>", "deadline of the check that the page answers, in milliseconds", "5000")
    .action(async (opts: { admin: string; browser: boolean; timeout: string }) => {
      const timeoutMs = Number(opts.timeout);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
        throw new CliError(
          "ERR_CLI_USAGE",
          `--timeout "${opts.timeout}" is not a positive number of milliseconds`,
        );
      }
      const info = await dashboardInfo(opts.admin, timeoutMs);
      write(`${info.url}\n`);
      const up = info.proxies.filter((p) => p.up).length;
      io.stderr.write(
        `${info.workloads} workloads, ${info.edges} edges in the last minute, ${up} of ${info.proxies.length} proxies answering\n`,
      );
      const opened = openInBrowser(info.url, {
        isTTY: io.stdout.isTTY === true,
        path: env.PATH,
        enabled: opts.browser,
      });
      if (opened === "opened") io.stderr.write("opened in your browser (xdg-open)\n");
      else if (opened === "no xdg-open") io.stderr.write("xdg-open not found: open the address above\n");
    });

  // Each command's usage errors point at its own help.
  for (const command of [program, ...program.commands, ...authz.commands]) {
    const names: string[] = [];
    for (let c: Command | null = command; c !== null; c = c.parent) names.unshift(c.name());
    command.exitOverride().configureOutput({
      ...program.configureOutput(),
      outputError: (str, out) =>
        out(`${str.trim().replace(/\s*\n\s*/g, " ")} (see ${names.join(" ")} --help)\n`),
    });
  }
  return program;
}

/**
 * Runs `ambient` with `argv` (without the node and script paths) and resolves with the exit code.
 * Errors are written to `io.stderr` as one line that says what to do.
 */
export async function runCli(argv: readonly string[], io: CliIo = process): Promise<number> {
  let exitCode = EXIT_OK;
  const program = createProgram(io, (code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync([...argv], { from: "user" });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; parse errors were already written.
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    if (err instanceof CliError) {
      io.stderr.write(`error: ${err.message}\n`);
      return err.code === "ERR_CLI_USAGE" ? EXIT_USAGE : EXIT_FAILURE;
    }
    io.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT_FAILURE;
  }
}
