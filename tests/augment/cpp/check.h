// A minimal test harness for the C++ kernel tests (no third-party framework needed).
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace delira_test {

struct Case {
  const char* name;
  std::function<void()> body;
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

inline int& failures() {
  static int count = 0;
  return count;
}

struct Register {
  Register(const char* name, std::function<void()> body) { registry().push_back({name, std::move(body)}); }
};

}  // namespace delira_test

#define DELIRA_TEST(name)                                                      \
  static void name();                                                          \
  static ::delira_test::Register register_##name(#name, name);                 \
  static void name()

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
      ++::delira_test::failures();                                                       \
    }                                                                                    \
  } while (0)

#define CHECK_THROWS(expr, exception_type)                                                          \
  do {                                                                                              \
    bool thrown = false;                                                                            \
    try {                                                                                           \
      expr;                                                                                         \
    } catch (const exception_type&) {                                                               \
      thrown = true;                                                                                \
    }                                                                                               \
    if (!thrown) {                                                                                  \
      std::fprintf(stderr, "%s:%d: expected %s from %s\n", __FILE__, __LINE__, #exception_type, #expr); \
      ++::delira_test::failures();                                                                  \
    }                                                                                               \
  } while (0)
