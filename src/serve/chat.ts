/**
 * Chat prompts: the model's own `chat_template` from tokenizer_config.json, rendered with
 * @huggingface/jinja (the Jinja implementation transformers.js uses), as transformers'
 * apply_chat_template does (messages, add_generation_prompt, bos_token, eos_token). A model
 * without a template (the embedded default has none) gets FALLBACK_TEMPLATE, ours: one
 * "role: content" line per message, then "assistant:".
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { FormatError } from '../errors.ts';

export interface ChatMessage {
  role: string;
  content: string;
}

export const FALLBACK_TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

export class ChatTemplate {
  private template: Template;

  /**
   * @param source the template text; @param fromModel whether it is the model's own (its text
   * then carries any BOS itself, so encoding adds none).
   */
  constructor(readonly source: string, readonly fromModel: boolean, private special: { bos_token?: string; eos_token?: string } = {}, file = 'chat_template') {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new FormatError(file, `chat_template does not parse: ${(e as Error).message}`);
    }
  }

  /** The prompt text for `messages`, ending where the assistant's reply starts. */
  render(messages: ChatMessage[]): string {
    return this.template.render({ messages, add_generation_prompt: true, ...this.special });
  }
}

/** Special-token strings of tokenizer_config.json: plain strings or {content} objects. */
function tokenString(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/**
 * The chat template of the model at `dir` (its tokenizer_config.json's chat_template: a string,
 * or a list of named templates, of which "default" is used), else the fallback.
 */
export function loadChatTemplate(dir: string | undefined): ChatTemplate {
  const file = dir && existsSync(dir) && statSync(dir).isDirectory() ? join(dir, 'tokenizer_config.json') : undefined;
  if (!file || !existsSync(file)) return new ChatTemplate(FALLBACK_TEMPLATE, false);
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new FormatError(file, `not valid JSON: ${(e as Error).message}`);
  }
  let t = cfg.chat_template;
  if (Array.isArray(t)) t = (t.find((x) => x?.name === 'default') ?? t[0])?.template;
  if (t === undefined || t === null) return new ChatTemplate(FALLBACK_TEMPLATE, false);
  if (typeof t !== 'string') throw new FormatError(file, 'chat_template must be a string or a list of {name, template}');
  return new ChatTemplate(t, true, { bos_token: tokenString(cfg.bos_token), eos_token: tokenString(cfg.eos_token) }, file);
}
