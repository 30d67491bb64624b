/**
 * The query parameters routing matches on: the first value of each name, names and values exactly as
 * the client sent them. Nothing is percent-decoded and `+` stays `+`, as Envoy's route matching reads
 * the query, so `?lang=c++` matches the value `c++` and `?env=pr%6Fd` does not match `prod`. A
 * parameter without `=` has the empty value.
 */
export function firstQueryValues(query: string | undefined): Map<string, string> {
  const params = new Map<string, string>();
  if (query === undefined || query === "") return params;
  let start = 0;
  while (start < query.length) {
    let end = query.indexOf("&", start);
    if (end === -1) end = query.length;
    const eq = query.indexOf("=", start);
    const [name, value] =
      eq !== -1 && eq < end
        ? [query.slice(start, eq), query.slice(eq + 1, end)]
        : [query.slice(start, end), ""];
    if (!params.has(name)) params.set(name, value);
    start = end + 1;
  }
  return params;
}
