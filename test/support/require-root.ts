// Root-tier tests create network namespaces, iptables rules and lab clusters. Without root they cannot run;
// failing here says so plainly instead of letting them pass or skip silently.
if (typeof process.getuid === 'function' && process.getuid() !== 0) {
  throw new Error(
    'root-tier tests need root (network namespaces, iptables); run them with sudo, or run `npm run test:unit`',
  );
}
