// Repair (-y): placeholder until the repair engine lands.
import { CheckOptions, CheckResult } from './check';
export interface RepairResult {
  rounds: number;
  actions: string[];
  wrote: boolean;
  lostTids?: { from: string; to: string };
  final?: CheckResult;
}
export interface RepairOptions extends CheckOptions {
  log?: (m: string) => void;
}
export async function repairHammer2(_spec: string, _first: CheckResult, _o: RepairOptions): Promise<RepairResult> {
  return { rounds: 0, actions: [], wrote: false };
}
