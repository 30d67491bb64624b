// Helpers that drive the openssl CLI for interop tests.
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export class OpensslDir {
  readonly dir = mkdtempSync(join(tmpdir(), "spiffe-openssl-"));

  path(name: string): string {
    return join(this.dir, name);
  }

  write(name: string, text: string): string {
    const p = this.path(name);
    writeFileSync(p, text);
    return p;
  }

  read(name: string): string {
    return readFileSync(this.path(name), "utf8");
  }

  /** Runs openssl synchronously in the directory; returns stdout+stderr, throws on failure. */
  run(args: string[], input?: string): string {
    return execFileSync("openssl", args, {
      cwd: this.dir,
      input,
      encoding: "utf8",
      stdio: ["pipe", "pipe", "pipe"],
      timeout: 20_000,
    });
  }

  /** Runs openssl and returns exit status and combined output without throwing. */
  tryRun(args: string[]): Promise<{ code: number; output: string }> {
    return new Promise((resolve) => {
      execFile("openssl", args, { cwd: this.dir, timeout: 20_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, output: `${stdout}${stderr}` });
      });
    });
  }

  /** Writes an extension config file and returns its path. */
  extFile(name: string, lines: string[]): string {
    return this.write(name, `${lines.join("\n")}\n`);
  }

  /** EC P-256 key + self-signed CA certificate. */
  makeRoot(name: string, subject: string, extraExt: string[] = []): void {
    const ext = this.extFile(`${name}.ext`, [
      "[v3]",
      "basicConstraints=critical,CA:TRUE",
      "keyUsage=critical,keyCertSign,cRLSign",
      "subjectKeyIdentifier=hash",
      ...extraExt,
    ]);
    this.run([
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${name}-key.pem`,
      "-out",
      `${name}-cert.pem`,
      "-subj",
      subject,
      "-days",
      "30",
      "-config",
      ext,
      "-extensions",
      "v3",
    ]);
  }

  /** EC key + certificate signed by `issuer` with the given extension lines. */
  makeSigned(name: string, issuer: string, subject: string, extLines: string[], days = 7): void {
    this.run([
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${name}-key.pem`,
      "-out",
      `${name}.csr`,
      "-subj",
      subject,
    ]);
    const ext = this.extFile(`${name}.ext`, ["[v3]", ...extLines]);
    this.run([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${issuer}-cert.pem`,
      "-CAkey",
      `${issuer}-key.pem`,
      "-set_serial",
      String(Math.floor(Math.random() * 1e9) + 1),
      "-days",
      String(days),
      "-extfile",
      ext,
      "-extensions",
      "v3",
      "-out",
      `${name}-cert.pem`,
    ]);
  }

  /** Certificate signed by `issuer` with an explicit validity window (YYYYMMDDHHMMSSZ). */
  makeSignedWindow(name: string, issuer: string, extLines: string[], start: string, end: string): void {
    this.run([
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${name}-key.pem`,
      "-out",
      `${name}.csr`,
      "-subj",
      "/O=window",
    ]);
    this.write("index.txt", "");
    this.write("serial", "1000\n");
    const conf = this.extFile(`${name}-ca.cnf`, [
      "[ca]",
      "default_ca=myca",
      "[myca]",
      `dir=${this.dir}`,
      "database=$dir/index.txt",
      "serial=$dir/serial",
      "new_certs_dir=$dir",
      "default_md=sha256",
      "policy=anything",
      "copy_extensions=none",
      "unique_subject=no",
      "[anything]",
      "O=optional",
      "[v3]",
      ...extLines,
    ]);
    this.run([
      "ca",
      "-batch",
      "-config",
      conf,
      "-cert",
      `${issuer}-cert.pem`,
      "-keyfile",
      `${issuer}-key.pem`,
      "-in",
      `${name}.csr`,
      "-out",
      `${name}-cert.pem`,
      "-startdate",
      start,
      "-enddate",
      end,
      "-extensions",
      "v3",
      "-notext",
    ]);
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Extension lines of a well-formed leaf SVID for `uri`. */
export function svidExt(uri: string): string[] {
  return [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth,clientAuth",
    `subjectAltName=critical,URI:${uri}`,
  ];
}
