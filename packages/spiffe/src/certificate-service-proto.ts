// Wire definition of istio.v1.auth.IstioCertificateService, built with protobufjs reflection so no
// .proto file has to be located at run time. Field numbers match Istio's CA API:
// IstioCertificateRequest { string csr = 1; int64 validity_duration = 3; google.protobuf.Struct metadata = 4; }
// IstioCertificateResponse { repeated string cert_chain = 1; }
import type { ServiceDefinition } from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { SpiffeError } from "./errors.js";

/** Request metadata key a node agent uses to ask for another workload's certificate (ztunnel). */
export const IMPERSONATED_IDENTITY_KEY = "ImpersonatedIdentity";

export const CREATE_CERTIFICATE_PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

const structProto = protobuf.common.get("google/protobuf/struct.proto") as protobuf.INamespace;

const root = protobuf.Root.fromJSON({
  nested: {
    ...structProto.nested,
    istio: {
      nested: {
        v1: {
          nested: {
            auth: {
              nested: {
                IstioCertificateRequest: {
                  fields: {
                    csr: { type: "string", id: 1 },
                    validityDuration: { type: "int64", id: 3 },
                    metadata: { type: "google.protobuf.Struct", id: 4 },
                  },
                },
                IstioCertificateResponse: {
                  fields: { certChain: { rule: "repeated", type: "string", id: 1 } },
                },
              },
            },
          },
        },
      },
    },
  },
});

const RequestType = root.lookupType("istio.v1.auth.IstioCertificateRequest");
const ResponseType = root.lookupType("istio.v1.auth.IstioCertificateResponse");

/** Plain form of a request. `metadata` holds only scalar values. */
export interface CertificateRequestMessage {
  csr: string;
  validityDuration: number;
  metadata: Record<string, string | number | boolean | null>;
}

export interface CertificateResponseMessage {
  certChain: string[];
}

type StructValue = {
  nullValue?: number;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
};

function toStruct(plain: CertificateRequestMessage["metadata"]): { fields: Record<string, StructValue> } {
  const fields: Record<string, StructValue> = {};
  for (const [k, v] of Object.entries(plain)) {
    if (typeof v === "string") fields[k] = { stringValue: v };
    else if (typeof v === "number") fields[k] = { numberValue: v };
    else if (typeof v === "boolean") fields[k] = { boolValue: v };
    else fields[k] = { nullValue: 0 };
  }
  return { fields };
}

function fromStruct(struct: unknown): CertificateRequestMessage["metadata"] {
  const out: CertificateRequestMessage["metadata"] = {};
  const fields = (struct as { fields?: Record<string, StructValue> } | undefined)?.fields ?? {};
  for (const [k, v] of Object.entries(fields)) {
    if (typeof v.stringValue === "string") out[k] = v.stringValue;
    else if (typeof v.numberValue === "number") out[k] = v.numberValue;
    else if (typeof v.boolValue === "boolean") out[k] = v.boolValue;
    else out[k] = null;
  }
  return out;
}

export function encodeRequest(msg: CertificateRequestMessage): Buffer {
  const obj = RequestType.fromObject({
    csr: msg.csr,
    validityDuration: msg.validityDuration,
    metadata: toStruct(msg.metadata),
  });
  return Buffer.from(RequestType.encode(obj).finish());
}

export function decodeRequest(buf: Buffer): CertificateRequestMessage {
  try {
    const obj = RequestType.toObject(RequestType.decode(buf), { longs: Number, defaults: true }) as {
      csr: string;
      validityDuration: number;
      metadata?: unknown;
    };
    return { csr: obj.csr, validityDuration: obj.validityDuration, metadata: fromStruct(obj.metadata) };
  } catch (cause) {
    throw new SpiffeError("ERR_CSR_INVALID", "IstioCertificateRequest could not be decoded", { cause });
  }
}

export function encodeResponse(msg: CertificateResponseMessage): Buffer {
  return Buffer.from(ResponseType.encode(ResponseType.fromObject(msg)).finish());
}

export function decodeResponse(buf: Buffer): CertificateResponseMessage {
  try {
    const obj = ResponseType.toObject(ResponseType.decode(buf), { arrays: true }) as { certChain: string[] };
    return { certChain: obj.certChain };
  } catch (cause) {
    throw new SpiffeError("ERR_CA_RESPONSE_INVALID", "IstioCertificateResponse could not be decoded", {
      cause,
    });
  }
}

/** grpc-js service definition of IstioCertificateService. */
export const certificateServiceDefinition: ServiceDefinition = {
  CreateCertificate: {
    path: CREATE_CERTIFICATE_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: encodeRequest,
    requestDeserialize: decodeRequest,
    responseSerialize: encodeResponse,
    responseDeserialize: decodeResponse,
    originalName: "createCertificate",
  },
};
