// Rendering shared by the commands: aligned tables, JSON/YAML for scripts, and colour that appears only
// on a terminal and never when NO_COLOR is set (https://no-color.org).
import { stringify } from "yaml";
import { CliError } from "./errors.js";

/** Output formats of every command: `table` for people, `json` and `yaml` for scripts. */
export type OutputFormat = "table" | "json" | "yaml";

export const OUTPUT_FORMATS: readonly OutputFormat[] = ["table", "json", "yaml"];

/** A table: column headers and rows of cell text. */
export interface Table {
  columns: string[];
  rows: string[][];
}

export function parseOutputFormat(value: string): OutputFormat {
  if ((OUTPUT_FORMATS as readonly string[]).includes(value)) return value as OutputFormat;
  throw new CliError(
    "ERR_CLI_USAGE",
    `unknown output format "${value}": use -o ${OUTPUT_FORMATS.join(", -o ")}`,
  );
}

/** Whether to colour output written to a stream, following the NO_COLOR convention. */
export function colourEnabled(
  stream: { isTTY?: boolean },
  env: Readonly<Record<string, string | undefined>>,
): boolean {
  const noColor = env.NO_COLOR;
  if (noColor !== undefined && noColor !== "") return false;
  return stream.isTTY === true;
}

/** ANSI styles, or plain text when colour is off. */
export interface Styles {
  bold(text: string): string;
  red(text: string): string;
  green(text: string): string;
  yellow(text: string): string;
}

export function styles(enabled: boolean): Styles {
  const wrap =
    (open: number, close: number) =>
    (text: string): string =>
      enabled ? `\u001b[${open}m${text}\u001b[${close}m` : text;
  return { bold: wrap(1, 22), red: wrap(31, 39), green: wrap(32, 39), yellow: wrap(33, 39) };
}

/** The table as aligned columns (two spaces apart), header first, no trailing spaces. */
export function renderTable(table: Table, style: Styles = styles(false)): string {
  const widths = table.columns.map((c, i) =>
    Math.max(c.length, ...table.rows.map((r) => (r[i] ?? "").length)),
  );
  const line = (cells: readonly string[], header: boolean): string =>
    cells
      .map((cell, i) => {
        const padded = i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0);
        return header ? style.bold(padded) : padded;
      })
      .join("  ")
      .trimEnd();
  return `${[line(table.columns, true), ...table.rows.map((r) => line(r, false))].join("\n")}\n`;
}

/** `value` as JSON (indented) or YAML, ending with a newline. */
export function renderData(value: unknown, format: "json" | "yaml"): string {
  return format === "json" ? `${JSON.stringify(value, null, 2)}\n` : stringify(value);
}
