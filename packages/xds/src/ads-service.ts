import type * as grpc from "@grpc/grpc-js";

/** Full gRPC service name of aggregated discovery. */
export const ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService";

const passThrough = (value: Uint8Array): Buffer =>
  Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
const keep = (buffer: Buffer): Buffer => buffer;

/**
 * Hand-written service definition: messages cross grpc-js as raw bytes, and this package
 * encodes and decodes them itself (responses are assembled from pre-encoded resources).
 */
export const adsServiceDefinition: grpc.ServiceDefinition = {
  StreamAggregatedResources: {
    path: `/${ADS_SERVICE}/StreamAggregatedResources`,
    requestStream: true,
    responseStream: true,
    requestSerialize: passThrough,
    requestDeserialize: keep,
    responseSerialize: passThrough,
    responseDeserialize: keep,
  },
  DeltaAggregatedResources: {
    path: `/${ADS_SERVICE}/DeltaAggregatedResources`,
    requestStream: true,
    responseStream: true,
    requestSerialize: passThrough,
    requestDeserialize: keep,
    responseSerialize: passThrough,
    responseDeserialize: keep,
  },
};
