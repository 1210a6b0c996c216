// The wire contracts: messages round-trip and the services expose the RPCs the architecture names.
#include <google/protobuf/descriptor.h>

#include "fp8rl/v1/trainer.grpc.pb.h"
#include "fp8rl/v1/weight_sync.grpc.pb.h"
#include "tests/catch.h"

TEST_CASE("WeightSync messages round-trip", "[proto]") {
  fp8rl::v1::WeightSyncMessage m;
  auto* man = m.mutable_manifest();
  man->set_weight_version(7);
  man->set_format(fp8rl::v1::WEIGHT_FORMAT_FP8_BLOCKWISE);
  auto* t = man->add_tensors();
  t->set_name("model.layers.0.mlp.up_proj.weight");
  t->set_dtype(fp8rl::v1::DTYPE_F8_E4M3);
  t->add_shape(3072);
  t->add_shape(1024);
  t->set_nbytes(3072 * 1024);
  std::string wire = m.SerializeAsString();
  fp8rl::v1::WeightSyncMessage back;
  REQUIRE(back.ParseFromString(wire));
  REQUIRE(back.kind_case() == fp8rl::v1::WeightSyncMessage::kManifest);
  CHECK(back.manifest().tensors(0).shape(1) == 1024);
  CHECK(back.manifest().weight_version() == 7);
}

TEST_CASE("services expose the architecture's RPCs", "[proto]") {
  // Through a message of each file, so the linker keeps the generated descriptors.
  const auto* trainer = fp8rl::v1::TrainRequest::descriptor()->file()->FindServiceByName("Trainer");
  REQUIRE(trainer != nullptr);
  for (const char* rpc :
       {"Train", "ComputeLogProbs", "SyncWeights", "SaveCheckpoint", "LoadCheckpoint", "Status"})
    CHECK(trainer->FindMethodByName(rpc) != nullptr);
  const auto* sync = fp8rl::v1::Manifest::descriptor()->file()->FindServiceByName("WeightSync");
  REQUIRE(sync != nullptr);
  const auto* push = sync->FindMethodByName("Push");
  REQUIRE(push != nullptr);
  CHECK(push->client_streaming());
  CHECK(!push->server_streaming());
}
