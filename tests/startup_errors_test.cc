// Inconsistent configs and checkpoints stop the real binaries at start-up, with a message that
// names the config key or tensor at fault.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void ReplaceInFile(const std::string& path, const std::string& from, const std::string& to) {
  const std::string text = ReadFile(path);
  ASSERT_NE(text.find(from), std::string::npos) << from << " not in " << path;
  std::ofstream(path) << absl::StrReplaceAll(text, {{from, to}});
}

// deepseek-v3-tiny sharded over 3 files; layer 2 is its MoE layer.
std::string DeepseekModel() {
  SyntheticModelOptions options;
  options.num_shards = 3;
  return testing::WriteTestModel("deepseek-v3-tiny", options);
}

// Starting `binary` must fail, and its log must name `expected`.
void ExpectStartupFailure(const std::string& binary, const std::vector<std::string>& args,
                          const std::string& expected) {
  auto server = testing::StartServer(binary, args);
  ASSERT_FALSE(server.ok()) << binary << " started although it should not";
  EXPECT_THAT(std::string(server.status().message()), HasSubstr(expected));
}

std::vector<std::string> RouterArgs(const std::string& model, int layer = 2) {
  return {"--model=" + model, "--layer=" + std::to_string(layer), "--shards=all@127.0.0.1:1"};
}

std::vector<std::string> ExpertArgs(const std::string& model) {
  return {"--model=" + model, "--layer=2", "--experts=all"};
}

TEST(StartupErrorsTest, ExpertsNotDivisibleIntoGroupsNameNGroup) {
  const std::string model = DeepseekModel();
  ReplaceInFile(model + "/config.json", "\"n_group\": 4", "\"n_group\": 3");
  ExpectStartupFailure(testing::RouterBinary(), RouterArgs(model),
                       "\"n_group\" (3) does not divide the 16 experts");
  ExpectStartupFailure(testing::ExpertBinary(), ExpertArgs(model), "\"n_group\"");
}

TEST(StartupErrorsTest, TopKAboveExpertCountNamesTheKey) {
  const std::string model = DeepseekModel();
  ReplaceInFile(model + "/config.json", "\"num_experts_per_tok\": 4",
                "\"num_experts_per_tok\": 17");
  ExpectStartupFailure(testing::RouterBinary(), RouterArgs(model),
                       "\"num_experts_per_tok\" (17) exceeds the expert count (16)");
}

TEST(StartupErrorsTest, UnknownModelTypeNamesTheTypeAndTheSupportedOnes) {
  const std::string model = DeepseekModel();
  ReplaceInFile(model + "/config.json", "\"deepseek_v3\"", "\"llama4\"");
  ExpectStartupFailure(testing::RouterBinary(), RouterArgs(model),
                       "\"model_type\" is \"llama4\"; supported: mixtral");
}

TEST(StartupErrorsTest, MissingTensorIsNamed) {
  const std::string model = DeepseekModel();
  const std::string index = model + "/model.safetensors.index.json";
  const std::string text = ReadFile(index);
  const std::string entry = "\"model.layers.2.mlp.gate.e_score_correction_bias\"";
  const size_t begin = text.find(entry);
  ASSERT_NE(begin, std::string::npos);
  const size_t end = text.find('\n', begin);
  std::ofstream(index) << text.substr(0, begin) << "\"unrelated\": \"x.safetensors\","
                       << text.substr(end);
  ExpectStartupFailure(testing::RouterBinary(), RouterArgs(model),
                       "model.layers.2.mlp.gate.e_score_correction_bias");
}

TEST(StartupErrorsTest, WrongTensorShapeNamesTensorAndBothShapes) {
  const std::string model = DeepseekModel();
  ReplaceInFile(model + "/config.json", "\"moe_intermediate_size\": 64",
                "\"moe_intermediate_size\": 96");
  ExpectStartupFailure(testing::ExpertBinary(), ExpertArgs(model),
                       "model.layers.2.mlp.experts.0.gate_proj.weight");
  ExpectStartupFailure(testing::ExpertBinary(), ExpertArgs(model), "expected [96, 128]");
}

TEST(StartupErrorsTest, DenseLayerIsRefusedNamingTheRule) {
  const std::string model = DeepseekModel();
  ExpectStartupFailure(testing::RouterBinary(), RouterArgs(model, 0),
                       "layer 0 of this deepseek_v3 model is a dense MLP layer, not MoE "
                       "(first_k_dense_replace=1)");
}

TEST(StartupErrorsTest, CorruptSafetensorsFileIsNamed) {
  const std::string model = DeepseekModel();
  const std::string file = model + "/model-00003-of-00003.safetensors";
  std::filesystem::resize_file(file, std::filesystem::file_size(file) / 2);
  ExpectStartupFailure(testing::ExpertBinary(), ExpertArgs(model), "model-00003-of-00003");
}

TEST(StartupErrorsTest, HugeNumHiddenLayersIsRefusedBeforeAnythingIsAllocated) {
  const std::string model = DeepseekModel();
  ReplaceInFile(model + "/config.json", "\"num_hidden_layers\": 4",
                "\"num_hidden_layers\": 2147483647");
  ExpectStartupFailure(testing::ExpertBinary(),
                       {"--model=" + model, "--layers=all", "--experts=all"},
                       "\"num_hidden_layers\" is 2147483647; expected 0 to 65536");
}

TEST(StartupErrorsTest, MessageLimitBeyondWhatGrpcTakesIsRefused) {
  std::vector<std::string> args = ExpertArgs(DeepseekModel());
  args.push_back("--max_message_mb=4096");
  ExpectStartupFailure(testing::ExpertBinary(), args, "--max_message_mb=4096: expected 0 to 2047");
}

TEST(StartupErrorsTest, ALayerBeyondTheModelIsNamedAsALayer) {
  const std::string model = DeepseekModel();  // 4 layers
  ExpectStartupFailure(testing::ExpertBinary(), {"--model=" + model, "--layers=9", "--experts=all"},
                       "layer 9 is out of range: the model has 4 layers (num_hidden_layers)");
}

TEST(StartupErrorsTest, AMissingCheckpointFileIsNamedWithWhyItIsNeeded) {
  const std::string model = DeepseekModel();
  std::filesystem::remove(model + "/model-00001-of-00003.safetensors");
  for (const std::string& binary : {testing::ExpertBinary(), testing::RouterBinary()}) {
    ExpectStartupFailure(binary,
                         binary == testing::ExpertBinary() ? ExpertArgs(model) : RouterArgs(model),
                         "every file the checkpoint's index lists must be present");
  }
}

TEST(StartupErrorsTest, FlagsOutOfRangeAreRefusedBeforeTheModelLoads) {
  // The model does not exist: a flag checked only after loading would be reported after the
  // model's error, or never (100 000 kernel threads aborted the shard once its weights loaded).
  const std::string missing = "--model=/nonexistent/model";
  ExpectStartupFailure(testing::ExpertBinary(),
                       {missing, "--experts=all", "--kernel_threads=100000"},
                       "--kernel_threads=100000: expected 0 to 1024");
  ExpectStartupFailure(testing::ExpertBinary(), {missing, "--experts=all", "--drain_s=-1"},
                       "--drain_s=-1: expected 0 to 86400");
  ExpectStartupFailure(testing::RouterBinary(),
                       {missing, "--shards=all@127.0.0.1:1", "--refresh_ms=0"},
                       "--refresh_ms=0: expected 10 to 3600000");  // was a busy loop
  ExpectStartupFailure(testing::RouterBinary(),
                       {missing, "--shards=all@127.0.0.1:1", "--default_timeout_ms=0"},
                       "--default_timeout_ms=0: expected 1 to 86400000");
  ExpectStartupFailure(testing::RouterBinary(), {missing, "--shards_file=/nonexistent/shards"},
                       "--shards_file: cannot read /nonexistent/shards: No such file");
  const std::string huge = testing::MakeTempDir("huge-shards-file") + "/shards";
  std::ofstream(huge) << "127.0.0.1:1\n";
  std::filesystem::resize_file(huge, 3 << 20);  // sparse: refused by its size, never read
  ExpectStartupFailure(
      testing::RouterBinary(), {missing, "--shards_file=" + huge},
      "--shards_file: " + huge + " is 3145728 bytes, more than the limit of " + "1048576 bytes");
  // gRPC takes it as an int of milliseconds: 4 294 968 s wrapped to 704 ms of connection age.
  ExpectStartupFailure(testing::ExpertBinary(),
                       {missing, "--experts=all", "--max_connection_age_s=4294968"},
                       "--max_connection_age_s=4294968: expected 0 to 2147483");
  // gRPC would serve these on 34463 and on 443; refused before the model loads, as the rest.
  ExpectStartupFailure(testing::ExpertBinary(),
                       {missing, "--experts=all", "--listen=127.0.0.1:70000"},
                       "--listen=127.0.0.1:70000: expected HOST:PORT with a port from 0 to 65535");
  ExpectStartupFailure(testing::RouterBinary(),
                       {missing, "--shards=all@127.0.0.1:1", "--listen=127.0.0.1"},
                       "--listen=127.0.0.1: expected HOST:PORT with a port from 0 to 65535");
  ExpectStartupFailure(testing::ExpertBinary(), {missing, "--experts=all", "--layer=-7"},
                       "--layer=-7: expected -1 to 65535");  // was taken as "all layers"
  ExpectStartupFailure(testing::RouterBinary(), {missing, "--shards=all@127.0.0.1:1", "--layer=-2"},
                       "--layer=-2: expected -1 to 65535");
}

// "--allow_partial false" turned the flag on and dropped the "false": every partial answer the
// user meant to refuse was served.
TEST(StartupErrorsTest, AnArgumentThatIsNotAFlagIsRefusedNotIgnored) {
  ExpectStartupFailure(
      testing::RouterBinary(),
      {"--model=/nonexistent/model", "--shards=all@127.0.0.1:1", "--allow_partial", "false"},
      "unexpected argument 'false': flags take the form --name=value (a boolean "
      "flag --name or --name=false)");
}

}  // namespace
}  // namespace moe
