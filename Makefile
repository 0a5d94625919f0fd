# Thin wrapper over CMake. `make demo` and `make test` are the README's two
# commands; both install missing Debian packages first (as root).
BUILD ?= build
BUILD_ASAN ?= build-asan
JOBS ?= $(shell nproc)

.PHONY: all deps build build-asan build-release test test-fast demo bench clean

all: build

deps:
	@./scripts/install-deps.sh

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan:
	cmake -S . -B $(BUILD_ASAN) -DVEER_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(BUILD_ASAN) -j $(JOBS)

build-release:
	cmake -S . -B build-release -DVEER_RELEASE=ON >/dev/null
	cmake --build build-release -j $(JOBS)

# Every test (unit + integration), built with AddressSanitizer and UBSan.
test: deps build-asan
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j 2

# The same suite on the plain build (quicker while developing).
test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j 2

demo: deps build
	./scripts/demo.sh $(BUILD)

bench: deps build-release
	./bench/run.sh build-release

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) build-release
