// Runs every registered C++ test and prints a summary line that ctest and CI logs can read.
#include <cstdio>

#include "check.h"

int main() {
  int passed = 0, failed = 0;
  for (const auto& c : delira_test::registry()) {
    const int before = delira_test::failures();
    c.body();
    if (delira_test::failures() == before) {
      ++passed;
    } else {
      ++failed;
      std::fprintf(stderr, "FAILED %s\n", c.name);
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
