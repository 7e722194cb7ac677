// read_state_dict: a state dict saved with torch.save (a zip of data.pkl and one record per
// storage), read by a restricted unpickler that knows only what state dicts hold — tensors
// (torch._utils._rebuild_tensor_v2 / _rebuild_parameter over typed storages), dictionaries
// (collections.OrderedDict, with its _metadata ignored), tuples, lists, numbers and strings —
// and refuses every other global, so that loading a weights file never runs code. LibTorch's
// own torch::pickle_load cannot read them (2.11 unpickles the tensors' backward-hook
// OrderedDict as None, then asserts on it).
#include "quantlab/core/weights_file.hpp"

#include "quantlab/sdk/error.hpp"

#include <caffe2/serialize/inline_container.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <sstream>
#include <variant>

namespace ql::core {

namespace {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Global {
  std::string name;  ///< "module name"
};
struct Storage {
  at::Tensor flat;  ///< the storage's elements, 1-D
};
struct Tuple {
  std::vector<ValuePtr> items;
};
struct Dict {
  std::vector<std::pair<ValuePtr, ValuePtr>> items;
};

struct Value {
  std::variant<std::monostate, bool, std::int64_t, double, std::string, Global, Storage, at::Tensor, Tuple, Dict> v;
};

ValuePtr make(decltype(Value::v) v) { return std::make_shared<Value>(Value{std::move(v)}); }

const std::map<std::string, at::ScalarType>& storage_types() {
  static const std::map<std::string, at::ScalarType> types{
      {"torch FloatStorage", at::kFloat}, {"torch DoubleStorage", at::kDouble}, {"torch HalfStorage", at::kHalf},
      {"torch BFloat16Storage", at::kBFloat16}, {"torch LongStorage", at::kLong}, {"torch IntStorage", at::kInt},
      {"torch ShortStorage", at::kShort}, {"torch CharStorage", at::kChar}, {"torch ByteStorage", at::kByte},
      {"torch BoolStorage", at::kBool}};
  return types;
}

class Unpickler {
 public:
  Unpickler(const std::string& pickle, caffe2::serialize::PyTorchStreamReader& zip, std::string what)
      : data_(pickle), zip_(zip), what_(std::move(what)) {}

  ValuePtr run() {
    while (true) {
      const auto op = static_cast<unsigned char>(byte());
      switch (op) {
        case 0x80: byte(); break;                          // PROTO
        case 0x95: bytes(8); break;                        // FRAME
        case '.': {                                        // STOP
          QL_CHECK(stack_.size() == 1, "{}: its pickle ends with {} values on the stack", what_, stack_.size());
          return stack_.back();
        }
        case '}': push(make(Dict{})); break;               // EMPTY_DICT
        case ')': push(make(Tuple{})); break;              // EMPTY_TUPLE
        case ']': push(make(Tuple{})); break;              // EMPTY_LIST (a list reads as a tuple)
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case 'N': push(make(std::monostate{})); break;
        case 0x88: push(make(true)); break;
        case 0x89: push(make(false)); break;
        case 'K': push(make(static_cast<std::int64_t>(static_cast<unsigned char>(byte())))); break;
        case 'M': push(make(static_cast<std::int64_t>(little<std::uint16_t>()))); break;
        case 'J': push(make(static_cast<std::int64_t>(little<std::int32_t>()))); break;
        case 0x8a: push(make(long1())); break;             // LONG1
        case 'G': push(make(big_double())); break;         // BINFLOAT
        case 'X': push(make(bytes(little<std::uint32_t>()))); break;          // BINUNICODE
        case 0x8c: push(make(bytes(static_cast<unsigned char>(byte())))); break;  // SHORT_BINUNICODE
        case 'q': memo(static_cast<unsigned char>(byte())); break;             // BINPUT
        case 'r': memo(little<std::uint32_t>()); break;                        // LONG_BINPUT
        case 0x94: memo(memo_.size()); break;                                  // MEMOIZE
        case 'h': push(recall(static_cast<unsigned char>(byte()))); break;     // BINGET
        case 'j': push(recall(little<std::uint32_t>())); break;                // LONG_BINGET
        case 'c': {                                                            // GLOBAL
          const std::string module = line();
          push(global(module + " " + line()));
          break;
        }
        case 't': push(make(Tuple{pop_to_mark()})); break;                      // TUPLE
        case 0x85: push(make(Tuple{pop_n(1)})); break;
        case 0x86: push(make(Tuple{pop_n(2)})); break;
        case 0x87: push(make(Tuple{pop_n(3)})); break;
        case 'a': append(pop_n(1)); break;                 // APPEND
        case 'e': append(pop_to_mark()); break;            // APPENDS
        case 's': set_items(pop_n(2)); break;              // SETITEM
        case 'u': set_items(pop_to_mark()); break;         // SETITEMS
        case 'b': pop_n(1); top(); break;                  // BUILD: OrderedDict's _metadata, dropped
        case 'Q': push(persistent(pop_n(1).front())); break;  // BINPERSID
        case 'R': {                                        // REDUCE
          std::vector<ValuePtr> call = pop_n(2);
          push(reduce(*call[0], *call[1]));
          break;
        }
        default:
          throw Error(fmt::format("{}: its pickle has opcode 0x{:02x} at byte {}, which a state dict does not use",
                                  what_, op, position_ - 1));
      }
    }
  }

 private:
  char byte() {
    QL_CHECK(position_ < data_.size(), "{}: its pickle ends early (truncated?)", what_);
    return data_[position_++];
  }
  std::string bytes(std::size_t n) {
    QL_CHECK(n <= data_.size() - position_, "{}: its pickle ends early (truncated?)", what_);
    std::string out = data_.substr(position_, n);
    position_ += n;
    return out;
  }
  template <typename T>
  T little() {
    const std::string raw = bytes(sizeof(T));
    T value{};
    std::memcpy(&value, raw.data(), sizeof(T));  // this machine is little-endian, as the format
    return value;
  }
  double big_double() {
    std::string raw = bytes(8);
    std::reverse(raw.begin(), raw.end());
    double value = 0;
    std::memcpy(&value, raw.data(), 8);
    return value;
  }
  std::int64_t long1() {
    const auto n = static_cast<unsigned char>(byte());
    QL_CHECK(n <= 8, "{}: its pickle holds an integer of {} bytes", what_, n);
    const std::string raw = bytes(n);
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < n; ++i) value |= static_cast<std::uint64_t>(static_cast<unsigned char>(raw[i])) << (8 * i);
    if (n > 0 && n < 8 && (static_cast<unsigned char>(raw[n - 1]) & 0x80)) value |= ~std::uint64_t{0} << (8 * n);
    return static_cast<std::int64_t>(value);
  }
  std::string line() {
    const std::size_t end = data_.find('\n', position_);
    QL_CHECK(end != std::string::npos && end - position_ < 256, "{}: its pickle has a malformed global", what_);
    std::string out = data_.substr(position_, end - position_);
    position_ = end + 1;
    return out;
  }

  void push(ValuePtr value) { stack_.push_back(std::move(value)); }
  ValuePtr& top() {
    QL_CHECK(!stack_.empty(), "{}: its pickle reads from an empty stack", what_);
    return stack_.back();
  }
  std::vector<ValuePtr> pop_n(std::size_t n) {
    QL_CHECK(stack_.size() >= n && (marks_.empty() || stack_.size() - n >= marks_.back()),
             "{}: its pickle reads past its stack", what_);
    std::vector<ValuePtr> out(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return out;
  }
  std::vector<ValuePtr> pop_to_mark() {
    QL_CHECK(!marks_.empty() && marks_.back() <= stack_.size(), "{}: its pickle has no mark to pop to", what_);
    const std::size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> out(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return out;
  }
  void memo(std::size_t index) {
    QL_CHECK(index <= memo_.size() + 1'000'000, "{}: its pickle memoises at {}", what_, index);
    if (memo_.size() <= index) memo_.resize(index + 1);
    memo_[index] = top();
  }
  ValuePtr recall(std::size_t index) {
    QL_CHECK(index < memo_.size() && memo_[index], "{}: its pickle recalls a value it never stored ({})", what_, index);
    return memo_[index];
  }
  void append(const std::vector<ValuePtr>& items) {
    auto* list = std::get_if<Tuple>(&top()->v);
    QL_CHECK(list != nullptr, "{}: its pickle appends to something that is not a list", what_);
    list->items.insert(list->items.end(), items.begin(), items.end());
  }
  void set_items(const std::vector<ValuePtr>& items) {
    auto* dict = std::get_if<Dict>(&top()->v);
    QL_CHECK(dict != nullptr && items.size() % 2 == 0, "{}: its pickle sets items of something that is not a dict",
             what_);
    for (std::size_t i = 0; i < items.size(); i += 2) dict->items.emplace_back(items[i], items[i + 1]);
  }

  ValuePtr global(const std::string& name) {
    const bool known = name == "torch._utils _rebuild_tensor_v2" || name == "torch._utils _rebuild_parameter" ||
                       name == "collections OrderedDict" || storage_types().count(name) > 0;
    QL_CHECK(known, "{}: its pickle uses '{}', which a state dict of tensors does not (only tensors, storages and "
                    "dictionaries are read)",
             what_, name);
    return make(Global{name});
  }

  // ('storage', <XStorage>, key, location, numel): the record data/<key>.
  ValuePtr persistent(const ValuePtr& id) {
    const auto* t = std::get_if<Tuple>(&id->v);
    QL_CHECK(t != nullptr && t->items.size() == 5, "{}: its pickle has a persistent id that is no storage", what_);
    const auto* type = std::get_if<Global>(&t->items[1]->v);
    const auto* key = std::get_if<std::string>(&t->items[2]->v);
    const auto* numel = std::get_if<std::int64_t>(&t->items[4]->v);
    QL_CHECK(type && key && numel && *numel >= 0 && storage_types().count(type->name),
             "{}: its pickle has a malformed storage reference", what_);
    const at::ScalarType dtype = storage_types().at(type->name);
    const std::string record = "data/" + *key;
    QL_CHECK(zip_.hasRecord(record), "{}: the storage {} is missing from the archive", what_, record);
    auto [data, size] = zip_.getRecord(record);
    const auto needed = static_cast<double>(*numel) * static_cast<double>(c10::elementSize(dtype));
    QL_CHECK(static_cast<double>(size) >= needed, "{}: the storage {} holds {} bytes, {} elements need {}", what_,
             record, size, *numel, needed);
    at::Tensor flat = torch::empty({*numel}, torch::TensorOptions().dtype(dtype));
    if (*numel > 0) std::memcpy(flat.data_ptr(), data.get(), static_cast<std::size_t>(needed));
    return make(Storage{flat});
  }

  std::vector<std::int64_t> integers(const ValuePtr& value, const char* what) {
    const auto* t = std::get_if<Tuple>(&value->v);
    QL_CHECK(t != nullptr, "{}: a tensor's {} is not a tuple", what_, what);
    std::vector<std::int64_t> out;
    for (const ValuePtr& item : t->items) {
      const auto* n = std::get_if<std::int64_t>(&item->v);
      QL_CHECK(n != nullptr && *n >= 0, "{}: a tensor's {} holds something other than sizes", what_, what);
      out.push_back(*n);
    }
    return out;
  }

  ValuePtr reduce(const Value& callable, const Value& arguments) {
    const auto* function = std::get_if<Global>(&callable.v);
    const auto* args = std::get_if<Tuple>(&arguments.v);
    QL_CHECK(function != nullptr && args != nullptr, "{}: its pickle calls something that is not a known global", what_);
    if (function->name == "collections OrderedDict") return make(Dict{});
    if (function->name == "torch._utils _rebuild_parameter") {
      QL_CHECK(!args->items.empty() && std::holds_alternative<at::Tensor>(args->items[0]->v),
               "{}: a parameter without its tensor", what_);
      return args->items[0];
    }
    QL_CHECK(function->name == "torch._utils _rebuild_tensor_v2" && args->items.size() >= 4,
             "{}: its pickle calls '{}' with {} arguments", what_, function->name, args->items.size());
    const auto* storage = std::get_if<Storage>(&args->items[0]->v);
    const auto* offset = std::get_if<std::int64_t>(&args->items[1]->v);
    QL_CHECK(storage != nullptr && offset != nullptr && *offset >= 0, "{}: a tensor without its storage", what_);
    const std::vector<std::int64_t> size = integers(args->items[2], "size");
    const std::vector<std::int64_t> stride = integers(args->items[3], "stride");
    QL_CHECK(size.size() == stride.size(), "{}: a tensor of {} sizes and {} strides", what_, size.size(), stride.size());
    double last = static_cast<double>(*offset);
    bool empty = false;
    for (std::size_t d = 0; d < size.size(); ++d) {
      empty |= size[d] == 0;
      last += static_cast<double>(size[d] - 1) * static_cast<double>(stride[d]);
    }
    QL_CHECK(empty || last < static_cast<double>(storage->flat.numel()),
             "{}: a tensor reaches element {} of a storage of {}", what_, last, storage->flat.numel());
    if (empty) return make(torch::empty(size, storage->flat.options()));
    return make(storage->flat.as_strided(size, stride, *offset).clone());
  }

  const std::string& data_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  std::string what_;
  std::size_t position_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<std::size_t> marks_;
  std::vector<ValuePtr> memo_;
};

}  // namespace

std::map<std::string, at::Tensor> read_state_dict(const std::string& bytes, const std::string& what) {
  std::istringstream stream(bytes);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  std::string pickle;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(&stream);
    QL_CHECK(zip->hasRecord("data.pkl"), "{}: a zip archive without data.pkl (not saved by torch.save)", what);
    auto [data, size] = zip->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(data.get()), size);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: not a state dict saved with torch.save ({})", what, e.what_without_backtrace()));
  }
  ValuePtr root;
  try {
    root = Unpickler(pickle, *zip, what).run();
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: {}", what, e.what_without_backtrace()));
  }
  const auto* dict = std::get_if<Dict>(&root->v);
  QL_CHECK(dict != nullptr, "{}: holds no dictionary (save model.state_dict())", what);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [key, value] : dict->items) {
    const auto* name = std::get_if<std::string>(&key->v);
    const auto* tensor = std::get_if<at::Tensor>(&value->v);
    QL_CHECK(name != nullptr && tensor != nullptr,
             "{}: an entry of its dictionary is not name -> tensor (save model.state_dict())", what);
    tensors.emplace(*name, *tensor);
  }
  return tensors;
}

}  // namespace ql::core
