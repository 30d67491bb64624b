// Test PKI made with the openssl CLI at test time: ECDSA P-256 roots and SPIFFE leaf certificates
// carrying one URI SAN, like the X.509-SVIDs ztunnel and istiod use.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestCredentials {
  key: string;
  certChain: string;
  trustBundle: string;
}

export interface IssueOptions {
  /** Sign with the second, unrelated root. */
  otherRoot?: boolean;
  /** Validity in the past. */
  expired?: boolean;
  /** Extra URI SANs (makes the certificate an invalid SVID). */
  extraUris?: string[];
  /** A CA certificate (cA=true, keyCertSign) in the leaf's place: chains to the root, not an SVID. */
  caLeaf?: boolean;
}

export interface TestPki {
  dir: string;
  rootPem: string;
  otherRootPem: string;
  /** Issues a leaf for `spiffeId`; files are written under `dir`. */
  issue(spiffeId: string, options?: IssueOptions): TestCredentials & { keyPath: string; certPath: string };
  cleanup(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function makeRoot(dir: string, name: string): void {
  openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", `${name}.key`], dir);
  openssl(
    [
      "req",
      "-x509",
      "-new",
      "-key",
      `${name}.key`,
      "-sha256",
      "-days",
      "30",
      "-subj",
      `/O=${name}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-out",
      `${name}.pem`,
    ],
    dir,
  );
}

let serial = 1;

export function createTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "hbone-pki-"));
  makeRoot(dir, "root");
  makeRoot(dir, "other");
  const rootPem = readFileSync(join(dir, "root.pem"), "utf8");
  const otherRootPem = readFileSync(join(dir, "other.pem"), "utf8");
  let n = 0;
  const cache = new Map<string, TestCredentials & { keyPath: string; certPath: string }>();
  return {
    dir,
    rootPem,
    otherRootPem,
    issue(spiffeId, options = {}) {
      // Plain certificates are reused per identity: openssl runs are the slowest part of the tests.
      const plain = !options.otherRoot && !options.expired && !options.extraUris && !options.caLeaf;
      const cached = plain ? cache.get(spiffeId) : undefined;
      if (cached) return cached;
      const name = `leaf${n++}`;
      const ca = options.otherRoot ? "other" : "root";
      openssl(
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", `${name}.key`],
        dir,
      );
      openssl(["req", "-new", "-key", `${name}.key`, "-subj", "/O=mesh", "-out", `${name}.csr`], dir);
      const uris = [spiffeId, ...(options.extraUris ?? [])].map((u) => `URI:${u}`).join(",");
      writeFileSync(
        join(dir, `${name}.ext`),
        [
          "[leaf]",
          options.caLeaf ? "basicConstraints=critical,CA:TRUE" : "basicConstraints=critical,CA:FALSE",
          options.caLeaf
            ? "keyUsage=critical,digitalSignature,keyCertSign"
            : "keyUsage=critical,digitalSignature,keyEncipherment",
          "extendedKeyUsage=serverAuth,clientAuth",
          `subjectAltName=critical,${uris}`,
          "",
        ].join("\n"),
      );
      if (options.expired) {
        // `openssl ca` is the 3.0 CLI way to pick explicit validity dates.
        const db = join(dir, `${name}-db`);
        mkdirSync(join(db, "new"), { recursive: true });
        writeFileSync(join(db, "index.txt"), "");
        writeFileSync(join(db, "serial"), "1000\n");
        writeFileSync(
          join(dir, `${name}.cnf`),
          [
            "[ca]",
            "default_ca=test",
            "[test]",
            `dir=${db}`,
            `database=${db}/index.txt`,
            `new_certs_dir=${db}/new`,
            `serial=${db}/serial`,
            "default_md=sha256",
            "policy=any",
            "unique_subject=no",
            "[any]",
            "organizationName=optional",
            "",
          ].join("\n"),
        );
        openssl(
          [
            "ca",
            "-batch",
            "-config",
            `${name}.cnf`,
            "-in",
            `${name}.csr`,
            "-cert",
            `${ca}.pem`,
            "-keyfile",
            `${ca}.key`,
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
            "-extfile",
            `${name}.ext`,
            "-extensions",
            "leaf",
            "-notext",
            "-out",
            `${name}.pem`,
          ],
          dir,
        );
      } else {
        openssl(
          [
            "x509",
            "-req",
            "-in",
            `${name}.csr`,
            "-CA",
            `${ca}.pem`,
            "-CAkey",
            `${ca}.key`,
            "-set_serial",
            String(serial++),
            "-days",
            "2",
            "-sha256",
            "-extfile",
            `${name}.ext`,
            "-extensions",
            "leaf",
            "-out",
            `${name}.pem`,
          ],
          dir,
        );
      }
      const issued = {
        key: readFileSync(join(dir, `${name}.key`), "utf8"),
        certChain: readFileSync(join(dir, `${name}.pem`), "utf8"),
        trustBundle: rootPem,
        keyPath: join(dir, `${name}.key`),
        certPath: join(dir, `${name}.pem`),
      };
      if (plain) cache.set(spiffeId, issued);
      return issued;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const TD = "cluster.local";
export const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;
export const SERVER_ID = `spiffe://${TD}/ns/default/sa/server`;
