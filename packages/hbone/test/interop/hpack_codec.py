"""Encodes and decodes HPACK header blocks with the hpack package (Debian python3-hpack), for the
HBONE HPACK tests. Reads one JSON request on stdin, writes one JSON answer on stdout.

  {"op": "encode", "blocks": [[[name, value], ...], ...], "huffman": true, "table_size": 4096}
      -> {"blocks": [hex, ...]}   (one encoder, so later blocks use the dynamic table)
  {"op": "decode", "blocks": [hex, ...]}
      -> {"blocks": [[[name, value], ...], ...]}
  {"op": "huffman", "strings": [hex, ...]}
      -> {"encoded": [hex, ...]}
"""
import json
import sys

import hpack
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

request = json.load(sys.stdin)
op = request["op"]
if op == "encode":
    encoder = hpack.Encoder()
    if "table_size" in request:
        encoder.header_table_size = request["table_size"]
    out = []
    for block in request["blocks"]:
        fields = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in block]
        out.append(encoder.encode(fields, huffman=request.get("huffman", True)).hex())
    print(json.dumps({"blocks": out}))
elif op == "decode":
    decoder = hpack.Decoder()
    out = []
    for block in request["blocks"]:
        fields = decoder.decode(bytes.fromhex(block), raw=True)
        out.append([[n.decode("latin-1"), v.decode("latin-1")] for n, v in fields])
    print(json.dumps({"blocks": out}))
elif op == "huffman":
    encoder = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    print(json.dumps({"encoded": [encoder.encode(bytes.fromhex(s)).hex() for s in request["strings"]]}))
else:
    raise SystemExit(f"unknown op {op}")
