/**
 * Front door of the rule module: the model (model.ts), its two renderers (iptables.ts, nftables.ts), the
 * executor that applies them inside a network namespace (apply.ts), and `renderPlan`, the full text of what
 * a fresh apply runs, used by the golden files and the agent's debug output.
 */
import { renderRestore } from './iptables.ts';
import { type Backend, type Family, type RuleSet, routeLocalCommand, routeRuleCommand } from './model.ts';
import { renderNftApply } from './nftables.ts';

export { type CaptureRecord, type Exec, RulesEngine, spawnExec } from './apply.ts';
export * from './model.ts';

function routingPlan(set: RuleSet): string[] {
  const r = set.routing;
  if (!r) return [];
  const out: string[] = [];
  for (const family of set.families) {
    out.push(`# ip -${family} -batch -`, routeRuleCommand(r, 'add'), routeLocalCommand(r, family, 'add'));
  }
  return out;
}

/** Everything a fresh apply of `set` feeds to the tools, as one text (golden files, docs, debug). */
export function renderPlan(set: RuleSet, backend: Backend): string {
  const out: string[] = [];
  if (backend === 'iptables') {
    for (const family of set.families as Family[]) {
      out.push(`# ${family === 4 ? 'iptables' : 'ip6tables'}-restore --noflush`);
      out.push(renderRestore(set, family, null).trimEnd());
    }
  } else {
    out.push('# nft -f -', renderNftApply(set).trimEnd());
  }
  out.push(...routingPlan(set));
  return `${out.join('\n')}\n`;
}
