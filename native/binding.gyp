{
  "targets": [
    {
      "target_name": "gems_native",
      "sources": ["src/gems_native.cc"],
      "cflags_cc": ["-O3", "-std=c++17", "-fno-exceptions", "-fopenmp-simd", "-fno-trapping-math"],
      "cflags_cc!": ["-fno-rtti"],
      "include_dirs": ["<!@(node -p \"process.env.GEMS_BLAS_INCLUDE_DIR || ''\")"],
      "libraries": ["-lopenblas"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
