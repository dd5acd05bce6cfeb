{
  # The one native addon of ambient-ts: setns, SO_MARK, IP_TRANSPARENT, SO_ORIGINAL_DST and unix
  # SOCK_SEQPACKET with SCM_RIGHTS. Built by scripts/build-native.ts (npm ci); Linux only; no downloads.
  'targets': [
    {
      'target_name': 'netns',
      'sources': ['src/errors.cc', 'src/netns.cc', 'src/seqpacket.cc', 'src/addon.cc'],
      'include_dirs': ["<!(node -p \"require('node-addon-api').include_dir\")"],
      'defines': ['NAPI_VERSION=8', 'NAPI_CPP_EXCEPTIONS', 'NODE_ADDON_API_DISABLE_DEPRECATED', '_GNU_SOURCE'],
      'cflags!': ['-fno-exceptions'],
      'cflags_cc!': ['-fno-exceptions', '-std=gnu++17'],
      'cflags_cc': ['-std=c++20', '-fexceptions', '-Wall', '-Wextra', '-Wno-missing-field-initializers'],
    },
  ],
}
