// A character-level transformer encoder classifier (for the language-names problem and any
// token-sequence problem): token embedding + sinusoidal or learned positions, N encoder layers
// of multi-head self-attention and a feed-forward block, padding masked out of attention and
// pooling, then a Linear classifier. Every projection (query, key, value, output, both
// feed-forward layers, classifier) is an SDK quantisable Linear and the feed-forward
// activation an SDK Activation.
//
// Unlike the Quantifind reference (docs/algorithms/uniform.md): inputs are batch-first, so attention
// runs along each sequence and never across the batch, and the network outputs logits (no
// softmax before the cross-entropy). Token id 0 is padding (ql::DatasetSpec).
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/nn.hpp"
#include "quantlab/sdk/onnx_graph.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/topology.hpp"

#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>

namespace {

constexpr char kOptions[] = R"toml(
d_model = 128             # width of the embeddings and of every encoder layer
heads = 4                 # attention heads (d_model must be a multiple)
layers = 2                # encoder layers
feedforward = 512         # hidden width of each feed-forward block
dropout = 0.1             # dropout on attention weights, after attention and feed-forward, and on the embeddings
activation = "relu"       # feed-forward activation: relu | gelu | ...
positions = "sinusoidal"  # sinusoidal (fixed, Vaswani et al.) | learned (an embedding per position)
norm = "post"             # post: LayerNorm after each residual sum (Vaswani et al., PyTorch's default) | pre: before each sub-block
pooling = "mean"          # mean | max over the non-padding positions
)toml";

struct Settings {
  std::int64_t d_model, heads, layers, feedforward;
  double dropout;
  std::string activation, positions, norm, pooling;
};

std::shared_ptr<ql::nn::Linear> linear(std::int64_t in, std::int64_t out) {
  return std::make_shared<ql::nn::Linear>(ql::nn::LinearOptions(in, out));
}

class SelfAttention : public torch::nn::Module {
 public:
  SelfAttention(std::int64_t d_model, std::int64_t heads, double dropout) : heads_(heads) {
    query_ = register_module("query", linear(d_model, d_model));
    key_ = register_module("key", linear(d_model, d_model));
    value_ = register_module("value", linear(d_model, d_model));
    output_ = register_module("output", linear(d_model, d_model));
    dropout_ = register_module("dropout", torch::nn::Dropout(dropout));
  }

  // x: [B, L, D]; padding: [B, L], true where masked.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& padding) {
    const std::int64_t b = x.size(0), l = x.size(1), d = x.size(2), dk = d / heads_;
    auto split = [&](const at::Tensor& t) { return t.view({b, l, heads_, dk}).transpose(1, 2); };  // [B, H, L, dk]
    const at::Tensor q = split(query_->forward(x)), k = split(key_->forward(x)), v = split(value_->forward(x));
    at::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(dk));
    scores = scores.masked_fill(padding.view({b, 1, 1, l}), -INFINITY);
    const at::Tensor weights = dropout_->forward(torch::softmax(scores, -1));
    return output_->forward(torch::matmul(weights, v).transpose(1, 2).reshape({b, l, d}));
  }

  // forward() as ONNX nodes. The sequences travel as rows [B·L, D] (the linear layers are Gemms
  // on them); `l` is their length and `masked` the padding as [B, 1, 1, L].
  std::string export_onnx(ql::onnx::Graph& graph, const std::string& rows, const std::string& masked, std::int64_t l,
                          const std::string& name) {
    const std::int64_t d = query_->options().out_features, dk = d / heads_;
    const auto heads = [&](const std::string& y, std::vector<std::int64_t> perm, const std::string& hint) {
      const std::string split = graph.add("Reshape", {y, graph.constant(hint + "_shape", torch::tensor({-1L, l, heads_, dk}))},
                                          hint + "_split");
      return graph.add("Transpose", {split}, hint, {{"perm", std::move(perm)}});
    };
    const std::string q = heads(ql::onnx::linear(graph, *query_, rows, name + ".query"), {0, 2, 1, 3}, name + ".q");
    const std::string k = heads(ql::onnx::linear(graph, *key_, rows, name + ".key"), {0, 2, 3, 1}, name + ".k_t");
    const std::string v = heads(ql::onnx::linear(graph, *value_, rows, name + ".value"), {0, 2, 1, 3}, name + ".v");
    std::string scores = graph.add("MatMul", {q, k}, name + ".dot");
    scores = graph.add("Div", {scores, graph.constant(name + ".sqrt_dk", torch::tensor(static_cast<float>(std::sqrt(static_cast<double>(dk)))))},
                       name + ".scores");
    scores = graph.add("Where", {masked, graph.constant(name + ".minus_infinity", torch::tensor(-INFINITY)), scores},
                       name + ".masked");
    const std::string weights = graph.add("Softmax", {scores}, name + ".weights", {{"axis", std::int64_t{-1}}});
    const std::string mixed = graph.add("Transpose", {graph.add("MatMul", {weights, v}, name + ".mixed_heads")},
                                        name + ".mixed_t", {{"perm", std::vector<std::int64_t>{0, 2, 1, 3}}});
    const std::string merged =
        graph.add("Reshape", {mixed, graph.constant(name + ".merged_shape", torch::tensor({-1L, d}))}, name + ".merged");
    return ql::onnx::linear(graph, *output_, merged, name + ".output");
  }

 private:
  std::int64_t heads_;
  std::shared_ptr<ql::nn::Linear> query_, key_, value_, output_;
  torch::nn::Dropout dropout_{nullptr};
};

class EncoderLayer : public torch::nn::Module {
 public:
  explicit EncoderLayer(const Settings& s) : pre_norm_(s.norm == "pre") {
    attention_ = register_module("attention", std::make_shared<SelfAttention>(s.d_model, s.heads, s.dropout));
    norm1_ = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.d_model})));
    ff1_ = register_module("ff1", linear(s.d_model, s.feedforward));
    activation_ = register_module("activation", std::make_shared<ql::nn::Activation>(s.activation));
    ff2_ = register_module("ff2", linear(s.feedforward, s.d_model));
    norm2_ = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.d_model})));
    dropout_ = register_module("dropout", torch::nn::Dropout(s.dropout));
  }

  at::Tensor forward(at::Tensor x, const at::Tensor& padding) {
    auto feed_forward = [&](const at::Tensor& y) {
      return ff2_->forward(dropout_->forward(activation_->forward(ff1_->forward(y))));
    };
    if (pre_norm_) {
      x = x + dropout_->forward(attention_->forward(norm1_->forward(x), padding));
      return x + dropout_->forward(feed_forward(norm2_->forward(x)));
    }
    x = norm1_->forward(x + dropout_->forward(attention_->forward(x, padding)));
    return norm2_->forward(x + dropout_->forward(feed_forward(x)));
  }

  // On rows [B·L, D], as SelfAttention::export_onnx.
  std::string export_onnx(ql::onnx::Graph& graph, std::string x, const std::string& masked, std::int64_t l,
                          const std::string& name) {
    const auto attention = [&](const std::string& y) {
      return attention_->export_onnx(graph, y, masked, l, name + ".attention");
    };
    const auto feed_forward = [&](const std::string& y) {
      const std::string hidden = ql::onnx::linear(graph, *ff1_, y, name + ".ff1");
      return ql::onnx::linear(graph, *ff2_, ql::onnx::activation(graph, *activation_, hidden, name + ".activation"),
                              name + ".ff2");
    };
    const auto norm = [&](torch::nn::LayerNorm& n, const std::string& y, const std::string& hint) {
      return ql::onnx::module(graph, *n, y, name + "." + hint);
    };
    const auto add = [&](const std::string& a, const std::string& b, const std::string& hint) {
      return graph.add("Add", {a, b}, name + "." + hint);
    };
    if (pre_norm_) {
      x = add(x, attention(norm(norm1_, x, "norm1")), "residual1");
      return add(x, feed_forward(norm(norm2_, x, "norm2")), "residual2");
    }
    x = norm(norm1_, add(x, attention(x), "residual1"), "norm1");
    return norm(norm2_, add(x, feed_forward(x), "residual2"), "norm2");
  }

 private:
  bool pre_norm_;
  std::shared_ptr<SelfAttention> attention_;
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  std::shared_ptr<ql::nn::Linear> ff1_, ff2_;
  std::shared_ptr<ql::nn::Activation> activation_;
  torch::nn::Dropout dropout_{nullptr};
};

class TransformerNetwork : public ql::Network {
 public:
  TransformerNetwork(const Settings& s, std::int64_t vocabulary, std::int64_t length, std::int64_t classes)
      : scale_(std::sqrt(static_cast<double>(s.d_model))), max_pooling_(s.pooling == "max") {
    embedding_ = register_module("embedding", torch::nn::Embedding(
                                                  torch::nn::EmbeddingOptions(vocabulary, s.d_model).padding_idx(0)));
    {
      // N(0, 1/d_model), so that after the sqrt(d_model) scale the embeddings have unit size,
      // like the positions; LibTorch's N(0, 1) would drown the positions and leave a bag of characters.
      torch::NoGradGuard no_grad;
      embedding_->weight.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(s.d_model)));
      embedding_->weight[0].zero_();
    }
    if (s.positions == "learned") {
      learned_positions_ = register_module("positions", torch::nn::Embedding(length, s.d_model));
    } else {
      // PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(...)
      const at::Tensor position = torch::arange(length, torch::kFloat32).unsqueeze(1);
      const at::Tensor frequency =
          torch::exp(torch::arange(0, s.d_model, 2, torch::kFloat32) * (-std::log(10000.0) / s.d_model));
      at::Tensor table = torch::zeros({length, s.d_model});
      table.slice(1, 0, c10::nullopt, 2).copy_(torch::sin(position * frequency));
      table.slice(1, 1, c10::nullopt, 2).copy_(torch::cos(position * frequency).slice(1, 0, s.d_model / 2));
      sinusoid_ = register_buffer("sinusoid", table);
    }
    dropout_ = register_module("dropout", torch::nn::Dropout(s.dropout));
    for (std::int64_t i = 0; i < s.layers; ++i) {
      layers_.push_back(register_module("layer" + std::to_string(i), std::make_shared<EncoderLayer>(s)));
    }
    if (s.norm == "pre") final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.d_model})));
    classifier_ = register_module("classifier", linear(s.d_model, classes));
  }

  at::Tensor forward(const at::Tensor& tokens) override {
    QL_CHECK(tokens.dim() == 2, "transformer: expected token ids [batch, length], got {} dimensions", tokens.dim());
    at::Tensor padding = tokens.eq(0);
    // A sequence of padding only attends to its first position rather than to nothing (NaN).
    padding.select(1, 0).logical_and_(padding.logical_not().any(1));
    at::Tensor x = embedding_->forward(tokens) * scale_;
    x = x + (learned_positions_ ? learned_positions_->forward(torch::arange(tokens.size(1), tokens.options()))
                                : sinusoid_.slice(0, 0, tokens.size(1)));
    x = dropout_->forward(x);
    for (auto& layer : layers_) x = layer->forward(x, padding);
    if (final_norm_) x = final_norm_->forward(x);
    const at::Tensor keep = padding.logical_not().unsqueeze(2);  // [B, L, 1]
    at::Tensor pooled;
    if (max_pooling_) {
      pooled = std::get<0>(x.masked_fill(keep.logical_not(), -INFINITY).max(1));
    } else {
      pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1);
    }
    return classifier_->forward(pooled);
  }

  // forward() as ONNX nodes: token ids [B, L] in, logits out.
  std::string export_onnx(ql::onnx::Graph& graph, const std::string& tokens) override {
    torch::NoGradGuard no_grad;
    const std::int64_t l = graph.input_shape().at(0);
    const std::string padding = export_padding(graph, tokens, l);
    const std::string masked =
        graph.add("Unsqueeze", {padding, graph.constant("attention_mask_axes", torch::tensor({1L, 2L}))}, "attention_mask");
    std::string x = graph.add("Gather", {graph.constant("embedding.weight", embedding_->weight), tokens}, "embedding");
    x = graph.add("Mul", {x, graph.constant("embedding.scale", torch::tensor(static_cast<float>(scale_)))},
                  "embedding.scaled");
    const at::Tensor positions =
        learned_positions_ ? learned_positions_->weight.slice(0, 0, l) : sinusoid_.slice(0, 0, l);
    x = graph.add("Add", {x, graph.constant("positions", positions)}, "embedding.positioned");
    const std::int64_t d = embedding_->options.embedding_dim();
    x = graph.add("Reshape", {x, graph.constant("rows_shape", torch::tensor({-1L, d}))}, "rows");
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      x = layers_[i]->export_onnx(graph, x, masked, l, "layer" + std::to_string(i));
    }
    if (final_norm_) x = ql::onnx::module(graph, *final_norm_, x, "final_norm");
    x = graph.add("Reshape", {x, graph.constant("sequences_shape", torch::tensor({-1L, l, d}))}, "sequences");
    const std::string keep = graph.add("Not", {padding}, "keep");
    const std::string keep3 =
        graph.add("Unsqueeze", {keep, graph.constant("keep_axes", torch::tensor({2L}))}, "keep_3d");
    std::string pooled;
    if (max_pooling_) {
      const std::string masked_x =
          graph.add("Where", {keep3, x, graph.constant("pool_minus_infinity", torch::tensor(-INFINITY))}, "pool_masked");
      std::vector<std::string> inputs{masked_x};
      std::vector<ql::onnx::Attribute> attributes{{"keepdims", std::int64_t{0}}};
      if (graph.opset() >= 18) inputs.push_back(graph.constant("pool_axes", torch::tensor({1L})));
      else attributes.push_back({"axes", std::vector<std::int64_t>{1}});
      pooled = graph.add("ReduceMax", inputs, "pooled", attributes);
    } else {
      const std::string keep_f = graph.add("Cast", {keep3}, "keep_float", {{"to", std::int64_t{1}}});
      const std::string axes = graph.constant("pool_axes", torch::tensor({1L}));
      const std::string sum = graph.add("ReduceSum", {graph.add("Mul", {x, keep_f}, "pool_kept"), axes}, "pool_sum",
                                        {{"keepdims", std::int64_t{0}}});
      const std::string count = graph.add("ReduceSum", {keep_f, axes}, "pool_count", {{"keepdims", std::int64_t{0}}});
      const std::string at_least_one =
          graph.add("Max", {count, graph.constant("pool_one", torch::tensor(1.0f))}, "pool_count_1");
      pooled = graph.add("Div", {sum, at_least_one}, "pooled");
    }
    return ql::onnx::linear(graph, *classifier_, pooled, "classifier");
  }

 private:
  double scale_;
  bool max_pooling_;
  // padding = tokens == 0, except where a sequence is all padding: there its first position
  // counts (forward()'s rule), as padding AND (position > 0 OR the sequence has a token).
  static std::string export_padding(ql::onnx::Graph& graph, const std::string& tokens, std::int64_t l) {
    const std::string padding = graph.add("Equal", {tokens, graph.constant("padding_id", torch::tensor(0L))}, "padding_ids");
    const std::string present = graph.add("Cast", {graph.add("Not", {padding}, "tokens_present")}, "tokens_present_f",
                                          {{"to", std::int64_t{1}}});
    std::vector<std::string> inputs{present};
    std::vector<ql::onnx::Attribute> attributes{{"keepdims", std::int64_t{1}}};
    if (graph.opset() >= 18) inputs.push_back(graph.constant("present_axes", torch::tensor({1L})));
    else attributes.push_back({"axes", std::vector<std::int64_t>{1}});
    const std::string any = graph.add("Cast", {graph.add("ReduceMax", inputs, "any_token_f", attributes)}, "any_token",
                                      {{"to", std::int64_t{9}}});
    at::Tensor later = torch::ones({1, l}, torch::kBool);
    later[0][0] = false;
    const std::string counts = graph.add("Or", {graph.constant("later_positions", later), any}, "padding_counts");
    return graph.add("And", {padding, counts}, "padding");
  }

  torch::nn::Embedding embedding_{nullptr}, learned_positions_{nullptr};
  at::Tensor sinusoid_;
  torch::nn::Dropout dropout_{nullptr};
  std::vector<std::shared_ptr<EncoderLayer>> layers_;
  torch::nn::LayerNorm final_norm_{nullptr};
  std::shared_ptr<ql::nn::Linear> classifier_;
};

class Transformer : public ql::Topology {
 public:
  explicit Transformer(const ql::Config& options) {
    s_.d_model = options.get_int("d_model", 2, 1 << 16);
    s_.heads = options.get_int("heads", 1, 1024);
    if (s_.d_model % s_.heads != 0 || s_.d_model % 2 != 0) {
      throw ql::ConfigError(options.error_message(
          "heads", fmt::format("d_model = {} must be even and a multiple of heads = {}", s_.d_model, s_.heads)));
    }
    s_.layers = options.get_int("layers", 0, 1024);
    s_.feedforward = options.get_int("feedforward", 1, 1 << 20);
    s_.dropout = options.get_double("dropout", 0.0, 0.99);
    s_.activation = options.get_choice("activation", {"relu", "gelu", "tanh", "identity", "relu6", "leaky_relu", "sigmoid", "hardtanh"});
    s_.positions = options.get_choice("positions", {"sinusoidal", "learned"});
    s_.norm = options.get_choice("norm", {"post", "pre"});
    s_.pooling = options.get_choice("pooling", {"mean", "max"});
  }

  std::shared_ptr<ql::Network> build(const ql::DatasetSpec& spec) override {
    if (spec.input_kind != ql::InputKind::tokens || spec.input_shape.size() != 1) {
      throw ql::ConfigError("topology transformer: needs token sequences (a problem such as language_names); "
                            "for images use mlp, convnet, vgg, alexnet or resnet");
    }
    if (spec.vocabulary_size < 2) {
      throw ql::ConfigError("topology transformer: the problem gives no vocabulary size");
    }
    return std::make_shared<TransformerNetwork>(s_, spec.vocabulary_size, spec.input_shape[0], spec.output_size());
  }

 private:
  Settings s_;
};

}  // namespace

QL_PLUGIN(topology, "transformer", "0.1.0", "character-level transformer encoder classifier", kOptions, Transformer)
