#include "quantlab/core/onnx_export.hpp"

#include "quantlab/core/experiment_store.hpp"
#include "quantlab/sdk/build_info.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/onnx_graph.hpp"
#include "quantlab/sdk/quantizer.hpp"

#include "proto/onnx_model.pb.h"

#include <torch/types.h>

#include <fmt/format.h>

#include <fstream>

namespace ql::core {

namespace {

// The IR version that goes with each operator set we write (ONNX's versioning table).
std::int64_t ir_version_for(int opset) { return opset >= 21 ? 10 : 7; }

::onnx::TensorProto::DataType data_type_of(const at::Tensor& tensor) {
  switch (tensor.scalar_type()) {
    case torch::kFloat32: return ::onnx::TensorProto::FLOAT;
    case torch::kUInt8: return ::onnx::TensorProto::UINT8;
    case torch::kInt8: return ::onnx::TensorProto::INT8;
    case torch::kInt16: return ::onnx::TensorProto::INT16;
    case torch::kInt32: return ::onnx::TensorProto::INT32;
    case torch::kInt64: return ::onnx::TensorProto::INT64;
    case torch::kBool: return ::onnx::TensorProto::BOOL;
    default: throw Error(fmt::format("ONNX export: no data type for a {} tensor", c10::toString(tensor.scalar_type())));
  }
}

// Two 4-bit integers to a byte, the first in the low nibble.
std::string packed_nibbles(const at::Tensor& value) {
  const at::Tensor bytes = value.to(torch::kInt64).flatten();
  const auto* v = bytes.data_ptr<std::int64_t>();
  std::string packed(static_cast<std::size_t>((bytes.numel() + 1) / 2), '\0');
  for (std::int64_t i = 0; i < bytes.numel(); ++i) {
    packed[static_cast<std::size_t>(i / 2)] |= static_cast<char>((v[i] & 0xF) << (i % 2 == 0 ? 0 : 4));
  }
  return packed;
}

void fill_tensor(::onnx::TensorProto& proto, const onnx::Constant& constant) {
  const at::Tensor& value = constant.value;
  proto.set_name(constant.name);
  for (std::int64_t size : value.sizes()) proto.add_dims(size);
  switch (constant.storage) {
    case onnx::Storage::int4:
      proto.set_data_type(::onnx::TensorProto::INT4);
      proto.set_raw_data(packed_nibbles(value));
      return;
    case onnx::Storage::uint4:
      proto.set_data_type(::onnx::TensorProto::UINT4);
      proto.set_raw_data(packed_nibbles(value));
      return;
    case onnx::Storage::natural:
      proto.set_data_type(data_type_of(value));
      // raw_data is little-endian, as this machine's memory is.
      proto.set_raw_data(std::string(static_cast<const char*>(value.data_ptr()), value.nbytes()));
      return;
  }
}

void fill_attribute(::onnx::AttributeProto& proto, const onnx::Attribute& attribute) {
  proto.set_name(attribute.name);
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::int64_t>) {
          proto.set_type(::onnx::AttributeProto::INT);
          proto.set_i(v);
        } else if constexpr (std::is_same_v<T, float>) {
          proto.set_type(::onnx::AttributeProto::FLOAT);
          proto.set_f(v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          proto.set_type(::onnx::AttributeProto::STRING);
          proto.set_s(v);
        } else if constexpr (std::is_same_v<T, std::vector<std::int64_t>>) {
          proto.set_type(::onnx::AttributeProto::INTS);
          for (std::int64_t x : v) proto.add_ints(x);
        } else {
          proto.set_type(::onnx::AttributeProto::FLOATS);
          for (float x : v) proto.add_floats(x);
        }
      },
      attribute.value);
}

void describe_value(::onnx::ValueInfoProto& proto, const std::string& name, int elem_type,
                    const std::vector<std::int64_t>& sample_shape) {
  proto.set_name(name);
  auto* tensor = proto.mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(elem_type);
  auto* shape = tensor->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  for (std::int64_t size : sample_shape) shape->add_dim()->set_dim_value(size);
}

// Cast to float, then the encoding's steps, one constant per step ([C, 1, 1] per channel).
std::string encode_input(onnx::Graph& graph, const std::string& pixels, const InputEncoding& encoding) {
  std::string x = graph.add("Cast", {pixels}, "preprocess.cast", {{"to", std::int64_t{::onnx::TensorProto::FLOAT}}});
  for (std::size_t k = 0; k < encoding.steps.size(); ++k) {
    const InputStep& step = encoding.steps[k];
    at::Tensor values = torch::tensor(step.values, torch::kFloat32);
    values = values.numel() == 1 ? values.squeeze() : values.view({-1, 1, 1});
    const char* op = step.operation == InputStep::Operation::subtract   ? "Sub"
                     : step.operation == InputStep::Operation::multiply ? "Mul"
                                                                        : "Div";
    const std::string name = fmt::format("preprocess.{}", k);
    x = graph.add(op, {x, graph.constant(name + ".values", values)}, name);
  }
  return x;
}

}  // namespace

std::string onnx_model(Network& network, const DatasetSpec& spec, const OnnxModelOptions& options) {
  onnx::Graph graph(options.opset, spec.input_shape);
  const std::string input = graph.unique_name("input");
  const bool raw = options.input_encoding.has_value() && spec.input_kind == InputKind::image;
  std::string network_input = raw ? encode_input(graph, input, *options.input_encoding) : input;
  if (const std::shared_ptr<Quantizer>& quantizer = network.input_quantizer()) {
    const std::optional<AffineGrid> grid = quantizer->affine_grid();
    QL_CHECK(grid.has_value(), "the network's input quantiser ({}) has no affine grid, which ONNX export needs",
             quantizer->describe());
    network_input = onnx::quantize(graph, *grid, network_input, "input_quantized");
  }
  std::string output;
  {
    // Inference mode: a topology may run its layers to learn feature-map sizes, which must not
    // move batch norm's running statistics.
    torch::NoGradGuard no_grad;
    const bool training = network.is_training();
    network.eval();
    try {
      output = network.export_onnx(graph, network_input);
    } catch (...) {
      network.train(training);
      throw;
    }
    network.train(training);
  }
  QL_CHECK(!graph.nodes().empty(), "ONNX export: the network's export added no nodes");
  if (options.fold_batch_norm) onnx::fold_batch_norms(graph);
  onnx::split_integer_layer_biases(graph);
  graph.add("Identity", {output}, "logits");

  ::onnx::ModelProto model;
  model.set_ir_version(ir_version_for(options.opset));
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(options.opset);
  model.set_producer_name("QuantLab");
  model.set_producer_version(QL_SDK_VERSION);
  ::onnx::GraphProto* g = model.mutable_graph();
  g->set_name("quantlab");
  for (const onnx::Node& node : graph.nodes()) {
    ::onnx::NodeProto* n = g->add_node();
    n->set_op_type(node.op_type);
    n->set_name(node.outputs.front());
    for (const std::string& name : node.inputs) n->add_input(name);
    for (const std::string& name : node.outputs) n->add_output(name);
    for (const onnx::Attribute& attribute : node.attributes) fill_attribute(*n->add_attribute(), attribute);
  }
  for (const onnx::Constant& constant : graph.constants()) fill_tensor(*g->add_initializer(), constant);
  const bool tokens = spec.input_kind == InputKind::tokens;
  describe_value(*g->add_input(), input,
                 tokens ? ::onnx::TensorProto::INT64 : (raw ? ::onnx::TensorProto::UINT8 : ::onnx::TensorProto::FLOAT),
                 spec.input_shape);
  describe_value(*g->add_output(), graph.nodes().back().outputs.front(), ::onnx::TensorProto::FLOAT,
                 {spec.output_size()});
  auto* layout = model.add_metadata_props();
  layout->set_key("input");
  layout->set_value(tokens ? "int64 token ids [batch, length], 0 = padding"
                           : (raw ? "uint8 pixels [batch, channels, height, width] (for ilsvrc12 the image resized "
                                    "so that its shorter side is the problem's resize, then centre-cropped); the "
                                    "graph normalises them as the problem does"
                                  : "float [batch, channels, height, width] as the network takes it (normalised)"));
  auto* classes = model.add_metadata_props();
  classes->set_key("class_names");
  classes->set_value(fmt::format("{}", fmt::join(spec.class_names, "\n")));
  for (const auto& [key, value] : options.metadata) {
    auto* entry = model.add_metadata_props();
    entry->set_key(key);
    entry->set_value(value);
  }
  std::string bytes;
  QL_CHECK(model.SerializeToString(&bytes), "ONNX export: the model could not be serialised");
  return bytes;
}

void write_onnx_model(Network& network, const DatasetSpec& spec, const std::filesystem::path& file,
                      const OnnxModelOptions& options) {
  write_file_atomically(file, onnx_model(network, spec, options));
}

}  // namespace ql::core
