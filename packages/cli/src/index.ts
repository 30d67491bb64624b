/**
 * The `ambient` command line for operators of an ambient mesh, and the functions behind it:
 * {@link ztunnelConfig} reads the ztunnels' admin `/config_dump`, {@link authzCheck} decides a call
 * with `@ambient/policy` and says why, and {@link analyzeManifests} reports every problem in a folder
 * of manifests with its field path. Each returns data; {@link runCli} renders it.
 *
 * @example
 * ```ts
 * import { analyzeManifests, authzCheck, loadManifests } from "@ambient/cli";
 *
 * const mesh = await loadManifests("mesh");
 * const check = authzCheck(mesh, { from: "sleep-0", to: "web:80", method: "POST" });
 * console.log(check.allowed, check.hops[0]?.explanation);
 * // false "denied by demo/web-get-from-sleep, rule 0: no `to` operation matched"
 * console.log(analyzeManifests(mesh).errors); // 0
 * ```
 *
 * @packageDocumentation
 */
export {
  type AnalyzeResult,
  analyzeManifests,
  type Finding,
  type FindingSeverity,
} from "./analyze.js";
export {
  type AuthzCheckOptions,
  type AuthzCheckResult,
  type AuthzHop,
  authzCheck,
  explainDecision,
} from "./authz-check.js";
export { type AuthzCheckLiveOptions, authzCheckLive, ipBytes, wireFromDump } from "./authz-check-live.js";
export { type CliIo, createProgram, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, runCli } from "./cli.js";
export {
  type DashboardInfo,
  DEFAULT_CONTROL_PLANE_ADMIN,
  dashboardInfo,
  findOnPath,
  type OpenOutcome,
  openInBrowser,
} from "./dashboard.js";
export { CliError, type CliErrorCode, type CliErrorDetails } from "./errors.js";
export {
  loadManifests,
  type ManifestObject,
  type ManifestProblem,
  type ManifestSet,
  parseManifestText,
} from "./manifests.js";
export {
  colourEnabled,
  OUTPUT_FORMATS,
  type OutputFormat,
  renderTable,
  type Styles,
  styles,
  type Table,
} from "./output.js";
export {
  DEFAULT_ADMIN_ADDRESSES,
  type FetchedConfigDump,
  fetchConfigDump,
  fetchConfigDumps,
  parseAdminAddress,
  sectionTable,
  ZTUNNEL_CONFIG_SECTIONS,
  type ZtunnelConfigOptions,
  type ZtunnelConfigResult,
  type ZtunnelConfigSection,
  ztunnelConfig,
} from "./ztunnel-config.js";
