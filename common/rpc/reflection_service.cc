#include "common/rpc/reflection_service.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/impl/server_initializer.h>

#include <memory>
#include <unordered_set>

namespace moe {
namespace {

namespace pb = google::protobuf;
using grpc::reflection::v1alpha::ServerReflectionRequest;
using grpc::reflection::v1alpha::ServerReflectionResponse;
using FileSet = std::unordered_set<const pb::FileDescriptor*>;

void AddWithImports(const pb::FileDescriptor* file, FileSet* files) {
  if (file == nullptr || !files->insert(file).second) return;
  for (int i = 0; i < file->dependency_count(); ++i) AddWithImports(file->dependency(i), files);
}

// The files a client may see: each registered service's file and everything it imports.
FileSet VisibleFiles(const std::vector<std::string>* services) {
  FileSet files;
  if (services == nullptr) return files;
  const pb::DescriptorPool* pool = pb::DescriptorPool::generated_pool();
  for (const std::string& name : *services) {
    const pb::ServiceDescriptor* service = pool->FindServiceByName(name);
    if (service != nullptr) AddWithImports(service->file(), &files);
  }
  return files;
}

grpc::Status NotFound(const std::string& what) {
  return grpc::Status(grpc::StatusCode::NOT_FOUND, what + " not found.");
}

// `file` first (clients resolve the requested file from the first entry), then its imports, each
// once, as the protocol wants them.
void AddFileDescriptors(const pb::FileDescriptor* file, ServerReflectionResponse* response) {
  std::vector<const pb::FileDescriptor*> ordered = {file};
  FileSet seen = {file};
  for (size_t i = 0; i < ordered.size(); ++i) {  // breadth first; ends: the import graph is finite
    for (int d = 0; d < ordered[i]->dependency_count(); ++d) {
      if (seen.insert(ordered[i]->dependency(d)).second)
        ordered.push_back(ordered[i]->dependency(d));
    }
  }
  for (const pb::FileDescriptor* f : ordered) {
    pb::FileDescriptorProto proto;
    f->CopyTo(&proto);
    proto.SerializeToString(
        response->mutable_file_descriptor_response()->add_file_descriptor_proto());
  }
}

grpc::Status Answer(const ServerReflectionRequest& request, const FileSet& visible,
                    const std::vector<std::string>* services, ServerReflectionResponse* response) {
  const pb::DescriptorPool* pool = pb::DescriptorPool::generated_pool();
  auto shown = [&visible](const pb::FileDescriptor* file) {
    return file != nullptr && visible.count(file) > 0;
  };
  switch (request.message_request_case()) {
    case ServerReflectionRequest::kFileByFilename: {
      const pb::FileDescriptor* file = pool->FindFileByName(request.file_by_filename());
      if (!shown(file)) return NotFound("File");
      AddFileDescriptors(file, response);
      return grpc::Status::OK;
    }
    case ServerReflectionRequest::kFileContainingSymbol: {
      const pb::FileDescriptor* file =
          pool->FindFileContainingSymbol(request.file_containing_symbol());
      if (!shown(file)) return NotFound("Symbol");
      AddFileDescriptors(file, response);
      return grpc::Status::OK;
    }
    case ServerReflectionRequest::kFileContainingExtension: {
      const auto& extension = request.file_containing_extension();
      const pb::Descriptor* type = pool->FindMessageTypeByName(extension.containing_type());
      if (type == nullptr || !shown(type->file())) return NotFound("Type");
      const pb::FieldDescriptor* field =
          pool->FindExtensionByNumber(type, extension.extension_number());
      if (field == nullptr || !shown(field->file())) return NotFound("Extension");
      AddFileDescriptors(field->file(), response);
      return grpc::Status::OK;
    }
    case ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const pb::Descriptor* type =
          pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr || !shown(type->file())) return NotFound("Type");
      std::vector<const pb::FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      auto* numbers = response->mutable_all_extension_numbers_response();
      numbers->set_base_type_name(type->full_name());
      for (const pb::FieldDescriptor* field : extensions) {
        if (shown(field->file())) numbers->add_extension_number(field->number());
      }
      return grpc::Status::OK;
    }
    case ServerReflectionRequest::kListServices: {
      auto* list = response->mutable_list_services_response();
      if (services != nullptr) {
        for (const std::string& name : *services) list->add_service()->set_name(name);
      }
      return grpc::Status::OK;
    }
    case ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
      break;
  }
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "");
}

class ReflectionPlugin final : public grpc::ServerBuilderPlugin {
 public:
  std::string name() override { return "moe_reflection"; }
  void InitServer(grpc::ServerInitializer* initializer) override {
    // The server's own list, which Start() extends with the default health service.
    service_->SetServiceList(initializer->GetServiceList());
    initializer->RegisterService(service_);
  }
  void Finish(grpc::ServerInitializer*) override {}
  void ChangeArguments(const std::string&, void*) override {}
  bool has_sync_methods() const override { return true; }

 private:
  std::shared_ptr<ReflectionService> service_ = std::make_shared<ReflectionService>();
};

class ReflectionOption final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->push_back(std::make_unique<ReflectionPlugin>());
  }
};

}  // namespace

void ReflectionService::SetServiceList(const std::vector<std::string>* services) {
  services_.store(services, std::memory_order_release);
}

grpc::Status ReflectionService::ServerReflectionInfo(
    grpc::ServerContext*,
    grpc::ServerReaderWriter<ServerReflectionResponse, ServerReflectionRequest>* stream) {
  ServerReflectionRequest request;
  while (stream->Read(&request)) {  // ends when the client closes its side or cancels
    const std::vector<std::string>* services = services_.load(std::memory_order_acquire);
    ServerReflectionResponse response;
    grpc::Status status = Answer(request, VisibleFiles(services), services, &response);
    if (!status.ok()) {
      response.mutable_error_response()->set_error_code(status.error_code());
      response.mutable_error_response()->set_error_message(status.error_message());
    }
    response.set_valid_host(request.host());
    *response.mutable_original_request() = request;
    if (!stream->Write(response)) break;
  }
  return grpc::Status::OK;
}

void AddReflection(grpc::ServerBuilder* builder) {
  builder->SetOption(std::make_unique<ReflectionOption>());
}

}  // namespace moe
