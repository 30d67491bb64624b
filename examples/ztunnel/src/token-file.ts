/**
 * The node's service-account token read from a file for every use: on Kubernetes the kubelet
 * rotates a projected token in place, and a proxy that read it once would be refused when it expires.
 */
import { readFileSync } from "node:fs";
import { ZtunnelError } from "./errors.js";

export interface TokenFileReader {
  /** The token in the file now; the last good one while the file is missing, unreadable or empty. */
  (): string;
}

function readToken(path: string): string {
  return readFileSync(path, "utf8").trim();
}

/**
 * Reads `path` now (a missing or empty file is `ERR_ZTUNNEL_INVALID_OPTION`) and returns a function
 * that reads it again on each call. A failed later read keeps the last good token, so a rotation
 * caught half-way (the kubelet swaps a symlink) never sends an empty one; `onError` hears of it.
 */
export function tokenFileReader(path: string, onError?: (err: Error) => void): TokenFileReader {
  let last: string;
  try {
    last = readToken(path);
  } catch (cause) {
    throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", `cannot read the token file ${path}`, { cause });
  }
  if (last === "") throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", `the token file ${path} is empty`);
  return () => {
    try {
      const now = readToken(path);
      if (now === "") throw new Error(`the token file ${path} is empty`);
      last = now;
    } catch (err) {
      onError?.(err as Error);
    }
    return last;
  };
}
