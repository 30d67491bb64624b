// HPACK's Huffman code (RFC 7541, Appendix B) is canonical: codes are handed out in order of
// (length, symbol). So the code lengths alone define it. One letter per symbol 0..256 (256 is EOS):
// "A" is 5 bits, "B" 6 bits, ... "Z" 30 bits.
const CODE_LENGTHS =
  "ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCCCCCCCCCCCCCCCCCCDCDIOIJBKABAB" +
  "ABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSSSSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRRSVVPORSRUVVV" +
  "WWVTUOQVWWVWTQQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWVZ";

const EOS = 256;

/**
 * The decoding tree as a flat array: node `n` has children at `tree[2n]` (bit 0) and `tree[2n + 1]`
 * (bit 1). A child >= 0 is another node; a child < 0 is the leaf `-(symbol + 1)`.
 */
const tree = buildTree();

function buildTree(): Int32Array {
  const symbols = Array.from({ length: 257 }, (_, s) => s).sort((a, b) => length(a) - length(b) || a - b);
  const nodes: number[] = [0, 0];
  let nodeCount = 1;
  let code = 0;
  let previous = length(symbols[0] as number);
  symbols.forEach((symbol, i) => {
    const bits = length(symbol);
    if (i > 0) code = (code + 1) << (bits - previous);
    previous = bits;
    let node = 0;
    for (let b = bits - 1; b >= 0; b--) {
      const slot = 2 * node + ((code >>> b) & 1);
      if (b === 0) {
        nodes[slot] = -(symbol + 1);
      } else {
        if (nodes[slot] === 0) {
          nodes[slot] = nodeCount++;
          nodes.push(0, 0);
        }
        node = nodes[slot] as number;
      }
    }
  });
  return Int32Array.from(nodes);
}

function length(symbol: number): number {
  return CODE_LENGTHS.charCodeAt(symbol) - 60;
}

/**
 * Decodes a Huffman-coded HPACK string. Returns `undefined` when the input is not valid: an EOS
 * symbol inside the data, or padding longer than 7 bits or not made of 1 bits (RFC 7541, 5.2).
 */
export function huffmanDecode(input: Uint8Array): string | undefined {
  const out: number[] = [];
  let node = 0;
  // Bits read since the last complete symbol, and whether all of them were 1s.
  let pending = 0;
  let allOnes = true;
  for (let i = 0; i < input.length; i++) {
    const byte = input[i] as number;
    for (let b = 7; b >= 0; b--) {
      const bit = (byte >>> b) & 1;
      const next = tree[2 * node + bit] as number;
      pending++;
      if (bit === 0) allOnes = false;
      if (next < 0) {
        const symbol = -next - 1;
        if (symbol === EOS) return undefined;
        out.push(symbol);
        node = 0;
        pending = 0;
        allOnes = true;
      } else {
        node = next;
      }
    }
  }
  if (pending > 7 || !allOnes) return undefined;
  return Buffer.from(out).toString("latin1");
}
