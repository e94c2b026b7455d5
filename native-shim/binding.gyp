{
  "targets": [
    {
      "target_name": "hammer2_shim",
      "sources": ["hammer2_shim.c"],
      "cflags": ["-O2", "-Wall", "-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}
