--- Picks the ghost-text backend for a buffer (Neovim's `vim.lsp.inline_completion` where it
--- exists and `native` is on, nib.nvim's extmarks otherwise) and sets the insert-mode keys.
local config = require("nib.config")

local M = {}

---@type table<integer, table> backend module per buffer
local backends = {}

function M.use_native()
  return config.options.native ~= false and require("nib.native").available()
end

--- The backend serving `bufnr`, if nib is attached there.
function M.backend(bufnr)
  return backends[bufnr]
end

local actions = {
  accept = { fn = "accept", desc = "Accept the nib suggestion", fallthrough = true },
  accept_word = { fn = "accept_word", desc = "Accept the next word of the nib suggestion", fallthrough = true },
  accept_line = { fn = "accept_line", desc = "Accept the next line of the nib suggestion", fallthrough = true },
  next = { fn = "next", desc = "Next nib suggestion (or ask for one)" },
  prev = { fn = "prev", desc = "Previous nib suggestion (or ask for one)" },
  dismiss = { fn = "dismiss", desc = "Dismiss the nib suggestion", fallthrough = true },
}

--- Buffer-local insert-mode keys. Accepting and dismissing fall through to the key's normal
--- meaning when no suggestion is shown.
local function set_keymaps(bufnr)
  local keymaps = config.options.keymaps
  if type(keymaps) ~= "table" then
    return
  end
  for name, spec in pairs(actions) do
    local lhs = keymaps[name]
    if type(lhs) == "string" and lhs ~= "" then
      vim.keymap.set("i", lhs, function()
        if spec.fallthrough and not require("nib").is_visible() then
          return lhs
        end
        return ("<Cmd>lua require('nib').%s()<CR>"):format(spec.fn)
      end, { buffer = bufnr, expr = true, replace_keycodes = true, silent = true, desc = spec.desc })
    end
  end
end

---@param client vim.lsp.Client
---@param bufnr integer
function M.attach(client, bufnr)
  local backend = M.use_native() and require("nib.native") or require("nib.ghost")
  backends[bufnr] = backend
  backend.attach(client, bufnr)
  set_keymaps(bufnr)
  vim.api.nvim_create_autocmd({ "BufUnload", "BufWipeout" }, {
    buffer = bufnr,
    once = true,
    callback = function()
      backends[bufnr] = nil
    end,
  })
  vim.api.nvim_create_autocmd("LspDetach", {
    buffer = bufnr,
    callback = function(args)
      if args.data and args.data.client_id == client.id then
        if backends[bufnr] and backends[bufnr].detach then
          backends[bufnr].detach(bufnr)
        end
        backends[bufnr] = nil
        return true -- delete this autocommand
      end
    end,
  })
end

return M
