// Python pickles without Python: a value tree (PyValue), a protocol-2 writer, and a restricted
// reader that rebuilds the tree without calling anything (GLOBAL, REDUCE and NEWOBJ become
// nodes), for the pickles of PyTorch checkpoints (torch.save's data.pkl, DCP's .metadata).
//
// The writer emits protocol 2 with no memo: GLOBAL ('c'), EMPTY_*, MARK/TUPLE/TUPLE1-3, APPENDS,
// SETITEMS, BININT1/BININT2/BININT/LONG1, BINFLOAT, BINUNICODE, NONE, NEWTRUE/NEWFALSE, REDUCE,
// NEWOBJ, BUILD, BINPERSID. The reader also accepts the memo and framing opcodes CPython's
// protocols 2-4 add (BINPUT, BINGET, MEMOIZE, FRAME, SHORT_BINUNICODE, STACK_GLOBAL, ...), so it
// parses what Python writes for the same kinds of values; it rejects recursive structures and
// nesting deeper than kMaxPickleDepth.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace fp8rl {

inline constexpr int kMaxPickleDepth = 128;

// An immutable Python value. Copies share the tree. Objects are kept as the recipe that makes
// them: `callable(*args)` (REDUCE) or `cls.__new__(cls, *args)` (NEWOBJ), then `__setstate__` /
// `__dict__.update` with `state` (BUILD) when there is one.
class PyValue {
 public:
  enum class Kind : uint8_t {
    kNone,
    kBool,
    kInt,
    kFloat,
    kStr,
    kBytes,
    kTuple,
    kList,
    kDict,
    kGlobal,        // module.name, e.g. torch.bfloat16
    kObject,        // see above
    kPersistentId,  // BINPERSID: the pickler's persistent_id(obj), kept as `args`
  };

  PyValue();  // None
  static PyValue boolean(bool v);
  static PyValue integer(int64_t v);
  static PyValue real(double v);
  static PyValue str(std::string v);
  static PyValue bytes(std::string v);
  static PyValue tuple(std::vector<PyValue> items);
  static PyValue list(std::vector<PyValue> items);
  static PyValue dict(std::vector<std::pair<PyValue, PyValue>> entries);
  static PyValue global(std::string module, std::string name);
  // callable(*args) (REDUCE); `args` must be a tuple.
  static PyValue call(PyValue callable, PyValue args);
  // cls.__new__(cls, *args) (NEWOBJ) followed by BUILD with `state` unless it is None.
  static PyValue new_object(PyValue cls, PyValue args, PyValue state);
  static PyValue persistent_id(PyValue id);

  Kind kind() const;
  bool is_none() const { return kind() == Kind::kNone; }
  // The accessors below require the matching kind (they abort otherwise: check kind() first).
  bool as_bool() const;
  int64_t as_int() const;
  double as_float() const;
  const std::string& as_str() const;                                // kStr and kBytes
  const std::vector<PyValue>& items() const;                        // kTuple, kList
  const std::vector<std::pair<PyValue, PyValue>>& entries() const;  // kDict
  const std::string& module() const;                                // kGlobal
  const std::string& name() const;                                  // kGlobal
  const PyValue& callable() const;                                  // kObject
  const PyValue& args() const;   // kObject (a tuple), kPersistentId (the id)
  bool is_newobj() const;        // kObject
  const PyValue& state() const;  // kObject; None when there was no BUILD

  bool is_global(std::string_view module, std::string_view name) const;
  // The value under a str key of a dict; nullptr when this is not a dict or the key is absent.
  const PyValue* find(std::string_view key) const;
  // find() in the state dict of an object (a dataclass or argparse.Namespace attribute).
  const PyValue* attr(std::string_view key) const;

  // Structural equality (floats by bits).
  bool operator==(const PyValue& other) const;
  // A Python-like repr, cut after `max_chars`, for error messages.
  std::string repr(size_t max_chars = 200) const;

 private:
  struct Node;
  explicit PyValue(std::shared_ptr<Node> node) : node_(std::move(node)) {}
  friend class PickleReader;
  std::shared_ptr<Node> node_;
};

// Protocol-2 pickle of `value` (see above for the opcodes).
std::string pickle_dumps(const PyValue& value);

// Parses a pickle into a tree; DataLoss naming `what` and the byte offset for malformed or
// truncated input, unknown opcodes, recursive structures or nesting deeper than kMaxPickleDepth.
absl::StatusOr<PyValue> pickle_loads(std::string_view bytes, std::string_view what);

}  // namespace fp8rl
