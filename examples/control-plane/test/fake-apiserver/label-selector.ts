// The `labelSelector` query parameter as the API server reads it: requirements separated by commas,
// each `key=value`, `key==value`, `key!=value`, `key`, `!key`, `key in (a,b)` or `key notin (a,b)`.
// `!=` and `notin` also select objects without the key, as in Kubernetes.

type Requirement = (labels: Readonly<Record<string, string>>) => boolean;

/** Splits on the commas outside parentheses. */
function requirements(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "(") depth++;
    else if (c === ")") depth--;
    else if (c === "," && depth === 0) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  out.push(text.slice(start));
  return out.map((r) => r.trim());
}

const KEY = /^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

function requirement(text: string): Requirement | string {
  let m = /^!\s*(\S+)$/.exec(text);
  if (m !== null) {
    const key = m[1] as string;
    return KEY.test(key) ? (labels) => !Object.hasOwn(labels, key) : `invalid key ${JSON.stringify(key)}`;
  }
  m = /^(\S+?)\s+(in|notin)\s*\(([^)]*)\)$/.exec(text);
  if (m !== null) {
    const key = m[1] as string;
    const values = (m[3] as string).split(",").map((v) => v.trim());
    if (!KEY.test(key) || values.some((v) => !VALUE.test(v)))
      return `invalid requirement ${JSON.stringify(text)}`;
    return m[2] === "in"
      ? (labels) => Object.hasOwn(labels, key) && values.includes(labels[key] as string)
      : (labels) => !Object.hasOwn(labels, key) || !values.includes(labels[key] as string);
  }
  m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(text);
  if (m !== null) {
    const [, key, op, value] = m as unknown as [string, string, string, string];
    if (!KEY.test(key) || !VALUE.test(value)) return `invalid requirement ${JSON.stringify(text)}`;
    return op === "!="
      ? (labels) => labels[key] !== value
      : (labels) => Object.hasOwn(labels, key) && labels[key] === value;
  }
  return KEY.test(text)
    ? (labels) => Object.hasOwn(labels, text)
    : `invalid requirement ${JSON.stringify(text)}`;
}

/**
 * A predicate over an object's labels, or the reason the selector is invalid. An empty or absent
 * selector selects every object.
 */
export function parseLabelSelector(
  text: string | undefined,
): ((labels: Readonly<Record<string, string>> | undefined) => boolean) | string {
  if (text === undefined || text.trim() === "") return () => true;
  const parsed: Requirement[] = [];
  for (const r of requirements(text)) {
    const one = requirement(r);
    if (typeof one === "string") return one;
    parsed.push(one);
  }
  return (labels) => parsed.every((r) => r(labels ?? {}));
}
