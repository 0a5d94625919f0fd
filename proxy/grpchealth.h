/* grpchealth.h - the gRPC health checking protocol's messages
 * (grpc.health.v1.Health/Check) as pure functions: no I/O, no allocation, so
 * the prober and the unit tests share them. */
#ifndef VEER_GRPCHEALTH_H
#define VEER_GRPCHEALTH_H

#include <stddef.h>
#include <stdint.h>

#define VEER_GRPC_HEALTH_PATH "/grpc.health.v1.Health/Check"

/* A grpc.health.v1.HealthCheckRequest{service} as one gRPC message (5-byte
 * prefix + protobuf) into out. Returns its length, or -1 when cap is too
 * small or the service name is longer than 16383 bytes. */
int veer_grpc_health_request(const char *service, uint8_t *out, size_t cap);

/* The serving status of a gRPC response body that holds one uncompressed
 * HealthCheckResponse message: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING,
 * 3 SERVICE_UNKNOWN (or any other enum value); an absent field 1 is 0, as in
 * proto3. -1: not a complete message, compressed, or malformed protobuf. */
int veer_grpc_health_parse(const uint8_t *body, size_t len);

#endif
