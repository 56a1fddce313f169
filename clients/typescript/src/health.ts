// The standard gRPC health protocol (grpc.health.v1.Health/Check), which every tickmesh port
// serves. Its descriptor is built here from a literal FileDescriptorProto: the protocol is
// fixed and tiny, and no proto file is loaded or compiled at run time.
import { create, createFileRegistry, type DescMessage, type DescMethodUnary } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";

/** A health status as the protocol names it. */
export type ServingStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

const file = create(FileDescriptorProtoSchema, {
  name: "grpc/health/v1/health.proto",
  package: "grpc.health.v1",
  syntax: "proto3",
  messageType: [
    {
      name: "HealthCheckRequest",
      field: [{ name: "service", jsonName: "service", number: 1, type: Type.STRING, label: Label.OPTIONAL }],
    },
    {
      name: "HealthCheckResponse",
      field: [
        {
          name: "status",
          jsonName: "status",
          number: 1,
          type: Type.ENUM,
          typeName: ".grpc.health.v1.HealthCheckResponse.ServingStatus",
          label: Label.OPTIONAL,
        },
      ],
      enumType: [
        {
          name: "ServingStatus",
          value: ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"].map((name, number) => ({ name, number })),
        },
      ],
    },
  ],
  service: [
    {
      name: "Health",
      method: [
        { name: "Check", inputType: ".grpc.health.v1.HealthCheckRequest", outputType: ".grpc.health.v1.HealthCheckResponse" },
      ],
    },
  ],
});

const service = createFileRegistry(file, () => undefined).getService("grpc.health.v1.Health");
if (service === undefined) {
  throw new Error("grpc.health.v1.Health did not build");
}

/** `grpc.health.v1.Health/Check`, for `createUnaryFn`. */
export const healthCheck = service.methods[0] as DescMethodUnary<DescMessage, DescMessage>;

/** The status name of a HealthCheckResponse's `status` number. */
export function servingStatus(status: unknown): ServingStatus {
  const names: ServingStatus[] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];
  return names[Number(status)] ?? "UNKNOWN";
}
