// Pickle writer and restricted reader (core/pickle.h). Opcode values are those of CPython's
// Lib/pickletools.py.
#include "core/pickle.h"

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace fp8rl {

struct PyValue::Node {
  Kind kind = Kind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s, name;  // str/bytes payload or a global's module; a global's name
  std::vector<PyValue> items;
  std::vector<std::pair<PyValue, PyValue>> entries;
  PyValue callable, args, state;  // kObject; args also holds a persistent id
  bool newobj = false;
  // Reader-only bookkeeping for the cycle and depth check.
  uint8_t color = 0;  // 0 unvisited, 1 on the current path, 2 done
  int height = 0;
};

namespace {

using Kind = PyValue::Kind;

enum Op : uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kBinFloat = 'G',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kBinInt2 = 'M',
  kNone = 'N',
  kBinPersId = 'Q',
  kReduce = 'R',
  kBinUnicode = 'X',
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  kEmptyList = ']',
  kAppend = 'a',
  kBuild = 'b',
  kGlobal = 'c',
  kDict = 'd',
  kAppends = 'e',
  kBinGet = 'h',
  kLongBinGet = 'j',
  kList = 'l',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTuple = 't',
  kSetItems = 'u',
  kEmptyDict = '}',
  kEmptyTuple = ')',
  kProto = 0x80,
  kNewObj = 0x81,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
};

void put_le(std::string* out, uint64_t v, int n) {
  for (int k = 0; k < n; ++k) out->push_back(char((v >> (8 * k)) & 0xff));
}

// Two's-complement little-endian bytes of v, as few as keep the sign (pickle's encode_long).
std::string long_bytes(int64_t v) {
  std::string b;
  put_le(&b, uint64_t(v), 8);
  while (b.size() > 1) {
    const uint8_t top = uint8_t(b.back()), next = uint8_t(b[b.size() - 2]);
    if ((top == 0x00 && !(next & 0x80)) || (top == 0xff && (next & 0x80))) {
      b.pop_back();
    } else {
      break;
    }
  }
  return b;
}

void dump(const PyValue& v, std::string* out) {
  switch (v.kind()) {
    case Kind::kNone:
      out->push_back(char(kNone));
      return;
    case Kind::kBool:
      out->push_back(char(v.as_bool() ? kNewTrue : kNewFalse));
      return;
    case Kind::kInt: {
      const int64_t x = v.as_int();
      if (x >= 0 && x < 256) {
        out->push_back(char(kBinInt1));
        put_le(out, uint64_t(x), 1);
      } else if (x >= 0 && x < 65536) {
        out->push_back(char(kBinInt2));
        put_le(out, uint64_t(x), 2);
      } else if (x >= INT32_MIN && x <= INT32_MAX) {
        out->push_back(char(kBinInt));
        put_le(out, uint64_t(uint32_t(int32_t(x))), 4);
      } else {
        const std::string b = long_bytes(x);
        out->push_back(char(kLong1));
        out->push_back(char(b.size()));
        out->append(b);
      }
      return;
    }
    case Kind::kFloat: {
      uint64_t bits;
      const double d = v.as_float();
      std::memcpy(&bits, &d, 8);
      out->push_back(char(kBinFloat));
      for (int k = 7; k >= 0; --k) out->push_back(char((bits >> (8 * k)) & 0xff));
      return;
    }
    case Kind::kStr:
    case Kind::kBytes:
      out->push_back(char(v.kind() == Kind::kStr ? kBinUnicode : kBinBytes));
      put_le(out, v.as_str().size(), 4);
      out->append(v.as_str());
      return;
    case Kind::kTuple: {
      const auto& items = v.items();
      if (items.empty()) {
        out->push_back(char(kEmptyTuple));
        return;
      }
      if (items.size() > 3) out->push_back(char(kMark));
      for (const PyValue& x : items) dump(x, out);
      out->push_back(
          char(items.size() > 3 ? uint8_t(kTuple) : uint8_t(kTuple1 + items.size() - 1)));
      return;
    }
    case Kind::kList:
      out->push_back(char(kEmptyList));
      if (!v.items().empty()) {
        out->push_back(char(kMark));
        for (const PyValue& x : v.items()) dump(x, out);
        out->push_back(char(kAppends));
      }
      return;
    case Kind::kDict:
      out->push_back(char(kEmptyDict));
      if (!v.entries().empty()) {
        out->push_back(char(kMark));
        for (const auto& [k, x] : v.entries()) {
          dump(k, out);
          dump(x, out);
        }
        out->push_back(char(kSetItems));
      }
      return;
    case Kind::kGlobal:
      out->push_back(char(kGlobal));
      absl::StrAppend(out, v.module(), "\n", v.name(), "\n");
      return;
    case Kind::kObject:
      dump(v.callable(), out);
      dump(v.args(), out);
      out->push_back(char(v.is_newobj() ? kNewObj : kReduce));
      if (!v.state().is_none()) {
        dump(v.state(), out);
        out->push_back(char(kBuild));
      }
      return;
    case Kind::kPersistentId:
      dump(v.args(), out);
      out->push_back(char(kBinPersId));
      return;
  }
}

void append_repr(const PyValue& v, std::string* out, size_t max_chars);

void append_seq(const std::vector<PyValue>& items, std::string* out, size_t max_chars) {
  for (size_t k = 0; k < items.size() && out->size() < max_chars; ++k) {
    if (k) out->append(", ");
    append_repr(items[k], out, max_chars);
  }
}

void append_repr(const PyValue& v, std::string* out, size_t max_chars) {
  if (out->size() >= max_chars) return;
  switch (v.kind()) {
    case Kind::kNone:
      out->append("None");
      break;
    case Kind::kBool:
      out->append(v.as_bool() ? "True" : "False");
      break;
    case Kind::kInt:
      absl::StrAppend(out, v.as_int());
      break;
    case Kind::kFloat:
      absl::StrAppend(out, v.as_float());
      break;
    case Kind::kStr:
      absl::StrAppend(out, "'", v.as_str(), "'");
      break;
    case Kind::kBytes:
      absl::StrAppend(out, "b<", v.as_str().size(), " bytes>");
      break;
    case Kind::kTuple:
      out->append("(");
      append_seq(v.items(), out, max_chars);
      out->append(v.items().size() == 1 ? ",)" : ")");
      break;
    case Kind::kList:
      out->append("[");
      append_seq(v.items(), out, max_chars);
      out->append("]");
      break;
    case Kind::kDict:
      out->append("{");
      for (size_t k = 0; k < v.entries().size() && out->size() < max_chars; ++k) {
        if (k) out->append(", ");
        append_repr(v.entries()[k].first, out, max_chars);
        out->append(": ");
        append_repr(v.entries()[k].second, out, max_chars);
      }
      out->append("}");
      break;
    case Kind::kGlobal:
      absl::StrAppend(out, v.module(), ".", v.name());
      break;
    case Kind::kObject:
      append_repr(v.callable(), out, max_chars);
      out->append("(");
      append_seq(v.args().items(), out, max_chars);
      out->append(")");
      if (!v.state().is_none()) {
        out->append(" with state ");
        append_repr(v.state(), out, max_chars);
      }
      break;
    case Kind::kPersistentId:
      out->append("persistent_id(");
      append_repr(v.args(), out, max_chars);
      out->append(")");
      break;
  }
}

}  // namespace

PyValue::PyValue() = default;

#define FP8RL_PY_NODE(kind_value)    \
  auto n = std::make_shared<Node>(); \
  n->kind = kind_value

PyValue PyValue::boolean(bool v) {
  FP8RL_PY_NODE(Kind::kBool);
  n->b = v;
  return PyValue(std::move(n));
}
PyValue PyValue::integer(int64_t v) {
  FP8RL_PY_NODE(Kind::kInt);
  n->i = v;
  return PyValue(std::move(n));
}
PyValue PyValue::real(double v) {
  FP8RL_PY_NODE(Kind::kFloat);
  n->f = v;
  return PyValue(std::move(n));
}
PyValue PyValue::str(std::string v) {
  FP8RL_PY_NODE(Kind::kStr);
  n->s = std::move(v);
  return PyValue(std::move(n));
}
PyValue PyValue::bytes(std::string v) {
  FP8RL_PY_NODE(Kind::kBytes);
  n->s = std::move(v);
  return PyValue(std::move(n));
}
PyValue PyValue::tuple(std::vector<PyValue> items) {
  FP8RL_PY_NODE(Kind::kTuple);
  n->items = std::move(items);
  return PyValue(std::move(n));
}
PyValue PyValue::list(std::vector<PyValue> items) {
  FP8RL_PY_NODE(Kind::kList);
  n->items = std::move(items);
  return PyValue(std::move(n));
}
PyValue PyValue::dict(std::vector<std::pair<PyValue, PyValue>> entries) {
  FP8RL_PY_NODE(Kind::kDict);
  n->entries = std::move(entries);
  return PyValue(std::move(n));
}
PyValue PyValue::global(std::string module, std::string name) {
  FP8RL_PY_NODE(Kind::kGlobal);
  n->s = std::move(module);
  n->name = std::move(name);
  return PyValue(std::move(n));
}
PyValue PyValue::call(PyValue callable, PyValue args) {
  FP8RL_CHECK(args.kind() == Kind::kTuple);
  FP8RL_PY_NODE(Kind::kObject);
  n->callable = std::move(callable);
  n->args = std::move(args);
  return PyValue(std::move(n));
}
PyValue PyValue::new_object(PyValue cls, PyValue args, PyValue state) {
  PyValue v = call(std::move(cls), std::move(args));
  v.node_->newobj = true;
  v.node_->state = std::move(state);
  return v;
}
PyValue PyValue::persistent_id(PyValue id) {
  FP8RL_PY_NODE(Kind::kPersistentId);
  n->args = std::move(id);
  return PyValue(std::move(n));
}
#undef FP8RL_PY_NODE

PyValue::Kind PyValue::kind() const { return node_ ? node_->kind : Kind::kNone; }

bool PyValue::as_bool() const {
  FP8RL_CHECK(kind() == Kind::kBool);
  return node_->b;
}
int64_t PyValue::as_int() const {
  FP8RL_CHECK(kind() == Kind::kInt);
  return node_->i;
}
double PyValue::as_float() const {
  FP8RL_CHECK(kind() == Kind::kFloat);
  return node_->f;
}
const std::string& PyValue::as_str() const {
  FP8RL_CHECK(kind() == Kind::kStr || kind() == Kind::kBytes);
  return node_->s;
}
const std::vector<PyValue>& PyValue::items() const {
  FP8RL_CHECK(kind() == Kind::kTuple || kind() == Kind::kList);
  return node_->items;
}
const std::vector<std::pair<PyValue, PyValue>>& PyValue::entries() const {
  FP8RL_CHECK(kind() == Kind::kDict);
  return node_->entries;
}
const std::string& PyValue::module() const {
  FP8RL_CHECK(kind() == Kind::kGlobal);
  return node_->s;
}
const std::string& PyValue::name() const {
  FP8RL_CHECK(kind() == Kind::kGlobal);
  return node_->name;
}
const PyValue& PyValue::callable() const {
  FP8RL_CHECK(kind() == Kind::kObject);
  return node_->callable;
}
const PyValue& PyValue::args() const {
  FP8RL_CHECK(kind() == Kind::kObject || kind() == Kind::kPersistentId);
  return node_->args;
}
bool PyValue::is_newobj() const {
  FP8RL_CHECK(kind() == Kind::kObject);
  return node_->newobj;
}
const PyValue& PyValue::state() const {
  FP8RL_CHECK(kind() == Kind::kObject);
  return node_->state;
}

bool PyValue::is_global(std::string_view module, std::string_view name) const {
  return kind() == Kind::kGlobal && node_->s == module && node_->name == name;
}

const PyValue* PyValue::find(std::string_view key) const {
  if (kind() != Kind::kDict) return nullptr;
  // The last occurrence wins, as when Python builds the dict.
  for (auto it = node_->entries.rbegin(); it != node_->entries.rend(); ++it) {
    if (it->first.kind() == Kind::kStr && it->first.as_str() == key) return &it->second;
  }
  return nullptr;
}

const PyValue* PyValue::attr(std::string_view key) const {
  return kind() == Kind::kObject ? node_->state.find(key) : nullptr;
}

bool PyValue::operator==(const PyValue& o) const {
  if (kind() != o.kind()) return false;
  if (node_ == o.node_) return true;
  const Node &a = *node_, &b = *o.node_;
  switch (kind()) {
    case Kind::kNone:
      return true;
    case Kind::kBool:
      return a.b == b.b;
    case Kind::kInt:
      return a.i == b.i;
    case Kind::kFloat:
      return std::memcmp(&a.f, &b.f, sizeof(double)) == 0;
    case Kind::kStr:
    case Kind::kBytes:
      return a.s == b.s;
    case Kind::kTuple:
    case Kind::kList:
      return a.items == b.items;
    case Kind::kDict:
      return a.entries == b.entries;
    case Kind::kGlobal:
      return a.s == b.s && a.name == b.name;
    case Kind::kObject:
      return a.newobj == b.newobj && a.callable == b.callable && a.args == b.args &&
             a.state == b.state;
    case Kind::kPersistentId:
      return a.args == b.args;
  }
  return false;
}

std::string PyValue::repr(size_t max_chars) const {
  std::string out;
  append_repr(*this, &out, max_chars);
  if (out.size() > max_chars) {
    out.resize(max_chars);
    out.append("...");
  }
  return out;
}

std::string pickle_dumps(const PyValue& value) {
  std::string out{char(kProto), 2};
  dump(value, &out);
  out.push_back(char(kStop));
  return out;
}

// The stack machine of pickle.load, building nodes instead of objects.
class PickleReader {
 public:
  PickleReader(std::string_view data, std::string_view what) : data_(data), what_(what) {}
  ~PickleReader() {
    // Nodes may form cycles or deep chains when the input was rejected: cut every edge so each
    // node is freed on its own.
    if (!ok_) {
      for (auto& n : created_) {
        n->items.clear();
        n->entries.clear();
        n->callable = n->args = n->state = PyValue();
      }
    }
  }

  absl::StatusOr<PyValue> run() {
    FP8RL_ASSIGN_OR_RETURN(PyValue result, parse());
    FP8RL_RETURN_IF_ERROR(check_acyclic());
    ok_ = true;
    return result;
  }

 private:
  using Node = PyValue::Node;

  template <typename... Parts>
  absl::Status error(const Parts&... parts) const {
    return absl::DataLossError(
        absl::StrCat(std::string(what_), ": pickle byte ", op_pos_, ": ", parts...));
  }

  PyValue make(Kind kind) {
    auto n = std::make_shared<Node>();
    n->kind = kind;
    created_.push_back(n);
    return PyValue(std::move(n));
  }
  Node& node(const PyValue& v) { return *v.node_; }

  absl::Status need(size_t n) {
    if (data_.size() - pos_ < n) return error("truncated (", n, " more bytes expected)");
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> read_le(int n) {
    FP8RL_RETURN_IF_ERROR(need(size_t(n)));
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= uint64_t(uint8_t(data_[pos_ + k])) << (8 * k);
    pos_ += size_t(n);
    return v;
  }
  absl::StatusOr<std::string> read_bytes(uint64_t n) {
    FP8RL_RETURN_IF_ERROR(need(n));
    std::string s(data_.substr(pos_, size_t(n)));
    pos_ += size_t(n);
    return s;
  }
  absl::StatusOr<std::string> read_line() {
    const size_t end = data_.find('\n', pos_);
    if (end == std::string_view::npos) return error("truncated (unterminated GLOBAL)");
    std::string s(data_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }
  absl::StatusOr<PyValue> pop() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) return error("stack underflow");
    PyValue v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  absl::StatusOr<PyValue*> top(Kind kind, const char* op) {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) return error("stack underflow");
    if (stack_.back().kind() != kind) {
      return error(op, " on ", stack_.back().repr(60));
    }
    return &stack_.back();
  }
  absl::StatusOr<std::vector<PyValue>> pop_mark() {
    if (marks_.empty()) return error("no MARK");
    std::vector<PyValue> items(std::make_move_iterator(stack_.begin() + marks_.back()),
                               std::make_move_iterator(stack_.end()));
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  PyValue sequence(Kind kind, std::vector<PyValue> items) {
    PyValue v = make(kind);
    node(v).items = std::move(items);
    return v;
  }
  absl::Status set_items(std::vector<PyValue> kv) {
    if (kv.size() % 2 != 0) return error("SETITEMS with an odd number of values");
    FP8RL_ASSIGN_OR_RETURN(PyValue * d, top(Kind::kDict, "SETITEM"));
    for (size_t k = 0; k < kv.size(); k += 2)
      node(*d).entries.emplace_back(std::move(kv[k]), std::move(kv[k + 1]));
    return absl::OkStatus();
  }
  absl::Status push_str(Kind kind, uint64_t len) {
    FP8RL_ASSIGN_OR_RETURN(std::string s, read_bytes(len));
    PyValue v = make(kind);
    node(v).s = std::move(s);
    stack_.push_back(std::move(v));
    return absl::OkStatus();
  }
  absl::Status push_int(int64_t i) {
    PyValue v = make(Kind::kInt);
    node(v).i = i;
    stack_.push_back(std::move(v));
    return absl::OkStatus();
  }
  absl::Status push_global(std::string module, std::string name) {
    PyValue v = make(Kind::kGlobal);
    node(v).s = std::move(module);
    node(v).name = std::move(name);
    stack_.push_back(std::move(v));
    return absl::OkStatus();
  }
  absl::Status memo_put(uint64_t index) {
    if (stack_.empty()) return error("memo put on an empty stack");
    memo_[index] = stack_.back();
    return absl::OkStatus();
  }
  absl::Status memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) return error("memo ", index, " was never put");
    stack_.push_back(it->second);
    return absl::OkStatus();
  }
  absl::Status make_object(bool newobj) {
    FP8RL_ASSIGN_OR_RETURN(PyValue args, pop());
    FP8RL_ASSIGN_OR_RETURN(PyValue callable, pop());
    if (args.kind() != Kind::kTuple)
      return error(newobj ? "NEWOBJ" : "REDUCE", " args not a tuple");
    PyValue v = make(Kind::kObject);
    node(v).callable = std::move(callable);
    node(v).args = std::move(args);
    node(v).newobj = newobj;
    stack_.push_back(std::move(v));
    return absl::OkStatus();
  }

  absl::StatusOr<PyValue> parse();
  absl::Status step(uint8_t op);
  absl::Status check_acyclic();

  std::string_view data_;
  std::string_view what_;
  size_t pos_ = 0, op_pos_ = 0;
  std::vector<PyValue> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyValue> memo_;
  std::vector<std::shared_ptr<Node>> created_;
  bool ok_ = false;
};

absl::StatusOr<PyValue> PickleReader::parse() {
  while (true) {
    op_pos_ = pos_;
    FP8RL_RETURN_IF_ERROR(need(1));
    const uint8_t op = uint8_t(data_[pos_++]);
    if (op == kStop) {
      if (!marks_.empty()) return error("STOP inside a MARK");
      FP8RL_ASSIGN_OR_RETURN(PyValue v, pop());
      if (pos_ != data_.size()) return error(data_.size() - pos_, " bytes after STOP");
      return v;
    }
    FP8RL_RETURN_IF_ERROR(step(op));
  }
}

absl::Status PickleReader::step(uint8_t op) {
  switch (op) {
    case kProto: {
      FP8RL_ASSIGN_OR_RETURN(uint64_t proto, read_le(1));
      if (proto > 5) return error("protocol ", proto);
      return absl::OkStatus();
    }
    case kFrame:  // framing only groups opcodes for buffered reads
      return read_le(8).status();
    case kMark:
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case kPop:
      return pop().status();
    case kPopMark:
      return pop_mark().status();
    case kDup: {
      if (stack_.empty()) return error("DUP on an empty stack");
      stack_.push_back(stack_.back());
      return absl::OkStatus();
    }
    case kNone:
      stack_.push_back(PyValue());
      return absl::OkStatus();
    case kNewTrue:
    case kNewFalse: {
      PyValue v = make(Kind::kBool);
      node(v).b = op == kNewTrue;
      stack_.push_back(std::move(v));
      return absl::OkStatus();
    }
    case kBinInt: {
      FP8RL_ASSIGN_OR_RETURN(uint64_t v, read_le(4));
      return push_int(int32_t(uint32_t(v)));
    }
    case kBinInt1:
    case kBinInt2: {
      FP8RL_ASSIGN_OR_RETURN(uint64_t v, read_le(op == kBinInt1 ? 1 : 2));
      return push_int(int64_t(v));
    }
    case kLong1: {
      FP8RL_ASSIGN_OR_RETURN(uint64_t n, read_le(1));
      if (n > 8) return error("LONG1 of ", n, " bytes does not fit 64 bits");
      FP8RL_ASSIGN_OR_RETURN(uint64_t v, read_le(int(n)));
      if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);  // sign
      return push_int(int64_t(v));
    }
    case kBinFloat: {
      FP8RL_RETURN_IF_ERROR(need(8));
      uint64_t bits = 0;
      for (int k = 0; k < 8; ++k) bits = bits << 8 | uint8_t(data_[pos_ + k]);
      pos_ += 8;
      PyValue v = make(Kind::kFloat);
      std::memcpy(&node(v).f, &bits, 8);
      stack_.push_back(std::move(v));
      return absl::OkStatus();
    }
    case kBinUnicode:
    case kBinBytes:
    case kShortBinUnicode:
    case kShortBinBytes:
    case kBinUnicode8: {
      const int width = op == kBinUnicode8                                 ? 8
                        : (op == kShortBinUnicode || op == kShortBinBytes) ? 1
                                                                           : 4;
      FP8RL_ASSIGN_OR_RETURN(uint64_t len, read_le(width));
      const bool text = op == kBinUnicode || op == kShortBinUnicode || op == kBinUnicode8;
      return push_str(text ? Kind::kStr : Kind::kBytes, len);
    }
    case kEmptyTuple:
      stack_.push_back(sequence(Kind::kTuple, {}));
      return absl::OkStatus();
    case kTuple1:
    case kTuple2:
    case kTuple3: {
      const size_t n = size_t(op - kTuple1 + 1);
      std::vector<PyValue> items(n);
      for (size_t k = n; k-- > 0;) {
        FP8RL_ASSIGN_OR_RETURN(items[k], pop());
      }
      stack_.push_back(sequence(Kind::kTuple, std::move(items)));
      return absl::OkStatus();
    }
    case kTuple:
    case kList: {
      FP8RL_ASSIGN_OR_RETURN(std::vector<PyValue> items, pop_mark());
      stack_.push_back(sequence(op == kTuple ? Kind::kTuple : Kind::kList, std::move(items)));
      return absl::OkStatus();
    }
    case kEmptyList:
      stack_.push_back(sequence(Kind::kList, {}));
      return absl::OkStatus();
    case kEmptyDict:
      stack_.push_back(make(Kind::kDict));
      return absl::OkStatus();
    case kDict: {
      FP8RL_ASSIGN_OR_RETURN(std::vector<PyValue> kv, pop_mark());
      stack_.push_back(make(Kind::kDict));
      return set_items(std::move(kv));
    }
    case kAppend: {
      FP8RL_ASSIGN_OR_RETURN(PyValue v, pop());
      FP8RL_ASSIGN_OR_RETURN(PyValue * list, top(Kind::kList, "APPEND"));
      node(*list).items.push_back(std::move(v));
      return absl::OkStatus();
    }
    case kAppends: {
      FP8RL_ASSIGN_OR_RETURN(std::vector<PyValue> items, pop_mark());
      FP8RL_ASSIGN_OR_RETURN(PyValue * list, top(Kind::kList, "APPENDS"));
      for (PyValue& v : items) node(*list).items.push_back(std::move(v));
      return absl::OkStatus();
    }
    case kSetItem: {
      FP8RL_ASSIGN_OR_RETURN(PyValue v, pop());
      FP8RL_ASSIGN_OR_RETURN(PyValue k, pop());
      return set_items({std::move(k), std::move(v)});
    }
    case kSetItems: {
      FP8RL_ASSIGN_OR_RETURN(std::vector<PyValue> kv, pop_mark());
      return set_items(std::move(kv));
    }
    case kGlobal: {
      FP8RL_ASSIGN_OR_RETURN(std::string module, read_line());
      FP8RL_ASSIGN_OR_RETURN(std::string name, read_line());
      return push_global(std::move(module), std::move(name));
    }
    case kStackGlobal: {
      FP8RL_ASSIGN_OR_RETURN(PyValue name, pop());
      FP8RL_ASSIGN_OR_RETURN(PyValue module, pop());
      if (name.kind() != Kind::kStr || module.kind() != Kind::kStr)
        return error("STACK_GLOBAL needs two str");
      return push_global(module.as_str(), name.as_str());
    }
    case kReduce:
    case kNewObj:
      return make_object(op == kNewObj);
    case kBuild: {
      FP8RL_ASSIGN_OR_RETURN(PyValue state, pop());
      FP8RL_ASSIGN_OR_RETURN(PyValue * obj, top(Kind::kObject, "BUILD"));
      if (!node(*obj).state.is_none()) return error("BUILD applied twice to one object");
      node(*obj).state = std::move(state);
      return absl::OkStatus();
    }
    case kBinPersId: {
      FP8RL_ASSIGN_OR_RETURN(PyValue id, pop());
      PyValue v = make(Kind::kPersistentId);
      node(v).args = std::move(id);
      stack_.push_back(std::move(v));
      return absl::OkStatus();
    }
    case kBinPut:
    case kLongBinPut: {
      FP8RL_ASSIGN_OR_RETURN(uint64_t index, read_le(op == kBinPut ? 1 : 4));
      return memo_put(index);
    }
    case kMemoize:
      return memo_put(memo_.size());
    case kBinGet:
    case kLongBinGet: {
      FP8RL_ASSIGN_OR_RETURN(uint64_t index, read_le(op == kBinGet ? 1 : 4));
      return memo_get(index);
    }
    default:
      return error("unsupported opcode 0x", absl::Hex(op));
  }
}

// Every node built (not only those reachable from the result, so nothing leaks) must be part of
// an acyclic graph no deeper than kMaxPickleDepth. Iterative DFS with per-node heights.
absl::Status PickleReader::check_acyclic() {
  auto children = [](const Node& n) {
    std::vector<Node*> out;
    auto add = [&](const PyValue& v) {
      if (v.node_) out.push_back(v.node_.get());
    };
    for (const PyValue& v : n.items) add(v);
    for (const auto& [k, v] : n.entries) {
      add(k);
      add(v);
    }
    add(n.callable);
    add(n.args);
    add(n.state);
    return out;
  };
  struct Frame {
    Node* node;
    std::vector<Node*> kids;
    size_t next = 0;
  };
  for (const auto& root : created_) {
    if (root->color == 2) continue;
    std::vector<Frame> path;
    root->color = 1;
    path.push_back({root.get(), children(*root)});
    while (!path.empty()) {
      Frame& f = path.back();
      if (f.next < f.kids.size()) {
        Node* c = f.kids[f.next++];
        if (c->color == 1) return error("recursive structure (an object contains itself)");
        if (c->color == 0) {
          c->color = 1;
          path.push_back({c, children(*c)});
        }
        continue;
      }
      int h = 0;
      for (Node* c : f.kids) h = std::max(h, c->height);
      f.node->height = h + 1;
      f.node->color = 2;
      if (f.node->height > kMaxPickleDepth) {
        return error("values nested deeper than ", kMaxPickleDepth);
      }
      path.pop_back();
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PyValue> pickle_loads(std::string_view bytes, std::string_view what) {
  PickleReader reader(bytes, what);
  return reader.run();
}

}  // namespace fp8rl
