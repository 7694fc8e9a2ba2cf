// Binding registry: each binding file registers a function that adds its entry points to the module,
// so new kernels add a file and never edit a central list.
//
//   static fastattn::Registrar reg("attention", [](pybind11::module_& m) { m.def(...); });
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/pybind11.h>

namespace fastattn {

using BindFn = std::function<void(pybind11::module_&)>;

std::vector<std::pair<std::string, BindFn>>& binders();

struct Registrar {
  Registrar(const char* name, BindFn fn) { binders().emplace_back(name, std::move(fn)); }
};

}  // namespace fastattn
