import { describe, expect, it } from 'vitest';
import { renderRules } from './rules.ts';

const svc = (eps: number) => ({
  namespace: 'shop',
  name: 'web',
  clusterIPs: ['10.1.240.10'],
  ports: [
    {
      name: 'http',
      protocol: 'TCP' as const,
      port: 80,
      endpoints: Array.from({ length: eps }, (_, i) => ({ ip: `10.1.1.${i + 2}`, port: 8080 })),
    },
  ],
});

describe('service proxy rules', () => {
  it('uniform random choice like kube-proxy: probabilities 1/n, 1/(n-1), …, last unconditional', () => {
    const { text, chains } = renderRules([svc(3)]);
    const probs = [...text.matchAll(/--probability (\S+)/g)].map((m) => m[1]);
    expect(probs).toEqual(['0.3333333333', '0.5000000000']);
    expect(text).toContain('-d 10.1.240.10/32 -p tcp -m tcp --dport 80 -j LAB-SVC-');
    expect(text.match(/DNAT --to-destination 10\.1\.1\.\d:8080/g)).toHaveLength(3);
    expect(chains.size).toBe(4);
    for (const c of chains) expect(c.length).toBeLessThanOrEqual(28);
  });

  it('no endpoints: REJECT in filter, no nat chain; stale chains are flushed and deleted', () => {
    const first = renderRules([svc(2)]);
    const second = renderRules([svc(0)], first.chains);
    expect(second.text).toMatch(/\*filter[\s\S]*-d 10\.1\.240\.10\/32 -p tcp -m tcp --dport 80 -j REJECT/);
    for (const c of first.chains) {
      expect(second.text).toContain(`:${c} - [0:0]`);
      expect(second.text).toContain(`-X ${c}`);
    }
    expect(second.chains.size).toBe(0);
  });

  it('headless services and IPv6 addresses are ignored; NodePorts go through LAB-NODEPORTS', () => {
    const headless = { ...svc(2), clusterIPs: ['None'] };
    expect(renderRules([headless]).chains.size).toBe(0);
    const np = svc(1);
    const withNodePort = { ...np, ports: [{ ...np.ports[0]!, nodePort: 30080 }] };
    const { text } = renderRules([withNodePort]);
    expect(text).toContain(
      '-A LAB-NODEPORTS -m comment --comment "shop/web:http" -p tcp -m tcp --dport 30080',
    );
    expect(text).toContain('-m addrtype --dst-type LOCAL -j LAB-NODEPORTS');
  });
});
