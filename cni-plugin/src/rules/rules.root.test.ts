/**
 * Root tier: the RulesEngine against real network namespaces, both backends. Capture writes exactly the
 * rendered rules (compared verbatim with iptables-save), is idempotent, and release restores the namespace
 * exactly (iptables-save, ip6tables-save, nft list ruleset, ip rule, table 100), also when the namespace
 * already had rules of its own.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CniTestNetns } from '../testdata/netns.ts';
import { RulesEngine } from './apply.ts';
import { ruleLines } from './iptables.ts';
import { podRules } from './model.ts';

let spaces: CniTestNetns[] = [];

function netns(): CniTestNetns {
  const ns = CniTestNetns.create();
  spaces.push(ns);
  return ns;
}

afterEach(() => {
  for (const ns of spaces) ns.delete();
  spaces = [];
});

function ourLines(text: string): string[] {
  return text.split('\n').filter((l) => /ISTIO_(PRERT|OUTPUT|POSTRT)/.test(l) && l.startsWith('-A'));
}

describe('iptables backend', () => {
  it('applies exactly the rendered rules, idempotently, and restores the namespace exactly', async () => {
    const engine = await RulesEngine.create({ backend: 'iptables' });
    const ns = netns();
    const before = ns.dump();
    const opts = { families: [4], dnsCapture: true, bypassInbound: false } as const;
    const record = await engine.applyPod(ns.path, opts, null);
    const saved = ns.exec('iptables-save');
    const set = podRules(opts);
    for (const table of ['mangle', 'nat', 'raw'] as const) {
      for (const line of ruleLines(set, table, 4)) expect(saved, line).toContain(line);
    }
    expect(ns.exec('ip', 'rule', 'show')).toContain('32764:\tfrom all fwmark 0x111/0xfff lookup 100');
    expect(ns.exec('ip', 'route', 'show', 'table', '100')).toContain('local default dev lo');
    const once = ns.dump();

    // Idempotent: re-applying (agent restart, reconcile) changes nothing, not even jump counts.
    const again = await engine.applyPod(ns.path, opts, record);
    expect(ns.dump()).toBe(once);
    expect(again.preexisting).toEqual(record.preexisting);

    // DNS capture switched off: the raw chains go, the rest stays.
    await engine.applyPod(ns.path, { ...opts, dnsCapture: false }, record);
    expect(ns.exec('iptables-save')).not.toContain('--zone 1');
    expect(ourLines(ns.exec('iptables-save', '-t', 'nat')).length).toBeGreaterThan(3);

    await engine.removePod(ns.path, record);
    expect(ns.dump()).toBe(before);
  });

  it('keeps pre-existing rules and tables of the namespace and restores them exactly', async () => {
    const engine = await RulesEngine.create({ backend: 'iptables' });
    const ns = netns();
    ns.exec('iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'lo', '-j', 'ACCEPT');
    ns.exec('iptables', '-t', 'nat', '-A', 'OUTPUT', '-d', '10.9.9.9/32', '-j', 'ACCEPT');
    ns.exec('iptables', '-A', 'INPUT', '-p', 'tcp', '--dport', '9', '-j', 'DROP');
    ns.exec('nft', 'add', 'table', 'inet', 'someone-else');
    ns.ip('rule', 'add', 'fwmark', '0x7', 'lookup', '7');
    const before = ns.dump();
    const record = await engine.applyPod(
      ns.path,
      { families: [4], dnsCapture: false, bypassInbound: false },
      null,
    );
    const nat = ns.exec('iptables-save', '-t', 'nat');
    expect(nat).toContain('-A OUTPUT -d 10.9.9.9/32 -j ACCEPT');
    expect(nat).toContain('-A OUTPUT -j ISTIO_OUTPUT');
    await engine.removePod(ns.path, record);
    expect(ns.dump()).toBe(before);
  });

  it('programs IPv6 for a dual-stack pod and removes it again', async () => {
    const engine = await RulesEngine.create({ backend: 'iptables' });
    const ns = netns();
    const before = ns.dump();
    const opts = { families: [4, 6], dnsCapture: false, bypassInbound: false } as const;
    const record = await engine.applyPod(ns.path, opts, null);
    const saved6 = ns.exec('ip6tables-save');
    for (const line of ruleLines(podRules(opts), 'nat', 6)) expect(saved6, line).toContain(line);
    expect(ns.exec('ip', '-6', 'rule', 'show')).toContain('fwmark 0x111/0xfff lookup 100');
    expect(ns.exec('ip', '-6', 'route', 'show', 'table', '100')).toContain('local default dev lo');
    await engine.removePod(ns.path, record);
    expect(ns.dump()).toBe(before);
  });

  it('removes whatever of ours it finds even without a record', async () => {
    const engine = await RulesEngine.create({ backend: 'iptables' });
    const ns = netns();
    await engine.applyPod(ns.path, { families: [4], dnsCapture: false, bypassInbound: false }, null);
    await engine.removePod(ns.path, null);
    expect(ourLines(ns.exec('iptables-save'))).toEqual([]);
    expect(ns.exec('iptables-save')).not.toContain('ISTIO_');
    expect(ns.exec('ip', 'rule', 'show')).not.toContain('lookup 100');
  });

  it('host probe SNAT: one rule per captured pod IP, rewritten atomically, removed on uninstall', async () => {
    const engine = await RulesEngine.create({ backend: 'iptables' });
    const host = netns();
    await engine.syncHost(host.path, [4], { v4: ['10.244.1.5', '10.244.1.7'], v6: [] });
    let nat = host.exec('iptables-save', '-t', 'nat');
    expect(nat).toContain('-A POSTROUTING -j ISTIO_POSTRT');
    expect(nat).toContain(
      '-A ISTIO_POSTRT -d 10.244.1.5/32 -p tcp -m owner --socket-exists -j SNAT --to-source 169.254.7.127',
    );
    await engine.syncHost(host.path, [4], { v4: ['10.244.1.7'], v6: [] });
    nat = host.exec('iptables-save', '-t', 'nat');
    expect(nat).not.toContain('10.244.1.5');
    expect(nat.split('\n').filter((l) => l === '-A POSTROUTING -j ISTIO_POSTRT')).toHaveLength(1);
    await engine.removeHost(host.path);
    expect(host.exec('iptables-save', '-t', 'nat')).not.toContain('ISTIO_');
  });
});

describe('nftables backend', () => {
  it('one inet table, idempotent, removal restores the namespace exactly', async () => {
    const engine = await RulesEngine.create({ backend: 'nftables' });
    const ns = netns();
    ns.exec('nft', 'add', 'table', 'ip', 'keepme');
    const before = ns.dump();
    const opts = { families: [4, 6], dnsCapture: true, bypassInbound: false } as const;
    const record = await engine.applyPod(ns.path, opts, null);
    const listed = ns.exec('nft', 'list', 'table', 'inet', 'istio-ambient');
    expect(listed).toContain('redirect to :15001');
    expect(listed).toContain('redirect to :15006');
    expect(listed).toContain('redirect to :15053');
    expect(listed).toContain('ip6 daddr != ::1');
    const once = ns.dump();
    await engine.applyPod(ns.path, opts, record);
    expect(ns.dump()).toBe(once);
    expect(ns.exec('iptables-save')).toBe('');
    await engine.removePod(ns.path, record);
    expect(ns.dump()).toBe(before);
  });

  it('host probe SNAT as a set', async () => {
    const engine = await RulesEngine.create({ backend: 'nftables' });
    const host = netns();
    await engine.syncHost(host.path, [4], { v4: ['10.244.1.5'], v6: [] });
    const listed = host.exec('nft', 'list', 'table', 'inet', 'istio-ambient-host');
    expect(listed).toContain('10.244.1.5');
    expect(listed).toContain('snat ip to 169.254.7.127');
    await engine.removeHost(host.path);
    expect(host.exec('nft', 'list', 'ruleset')).toBe('');
  });
});
