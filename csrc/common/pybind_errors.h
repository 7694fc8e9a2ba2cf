// The Python side of common/checks.h, for each extension's module block: std::invalid_argument (every
// FA_CHECK_ARG) is raised as `<module>.ArgumentError`, a subclass of both ValueError and RuntimeError --
// what fastattn's own errors are (fastattn.errors), so code written for fastattn (except ValueError) and
// code written for PyTorch's SDPA (except RuntimeError) both catch it. std::runtime_error stays
// RuntimeError (pybind11's default). The translator is module-local, so two extensions never translate
// each other's exceptions.
#pragma once

#include <pybind11/pybind11.h>

#include <stdexcept>

#include "common/checks.h"

namespace fastattn {

inline void register_argument_error(pybind11::module_& m) {
  static PyObject* cls = nullptr;  // one per extension (this header is compiled into each one)
  if (cls == nullptr) {
    PyObject* bases = PyTuple_Pack(2, PyExc_ValueError, PyExc_RuntimeError);
    cls = PyErr_NewExceptionWithDoc(
        FASTATTN_EXT_NAME ".ArgumentError",
        "A bad argument to a binding (the message names it and what is supported). Derives from ValueError "
        "and RuntimeError.",
        bases, nullptr);
    Py_XDECREF(bases);
    if (cls == nullptr) throw pybind11::error_already_set();
  }
  m.add_object("ArgumentError", pybind11::reinterpret_borrow<pybind11::object>(cls));
  pybind11::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(cls, e.what());
    }
  });
}

}  // namespace fastattn
