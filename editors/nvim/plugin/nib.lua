-- nib.nvim: commands and highlight groups. The server starts once `require("nib").setup()`
-- has been called; see `:help nib`.
if vim.g.loaded_nib then
  return
end
vim.g.loaded_nib = true

if vim.fn.has("nvim-0.10") == 0 then
  vim.api.nvim_echo({ { "nib.nvim needs Neovim 0.10 or newer", "ErrorMsg" } }, true, {})
  return
end

require("nib.config").highlights()
vim.api.nvim_create_autocmd("ColorScheme", {
  group = vim.api.nvim_create_augroup("nib.highlights", { clear = true }),
  callback = function()
    require("nib.config").highlights()
  end,
})

local command = vim.api.nvim_create_user_command

command("NibDocstring", function()
  require("nib").docstring()
end, { desc = "nib: add a docstring to the function at the cursor" })

command("NibTests", function()
  require("nib").tests()
end, { desc = "nib: generate unit tests for the function at the cursor" })

command("NibToggle", function(args)
  local arg = args.args
  if arg == "on" then
    require("nib").toggle(true)
  elseif arg == "off" then
    require("nib").toggle(false)
  else
    require("nib").toggle()
  end
end, {
  nargs = "?",
  complete = function()
    return { "on", "off" }
  end,
  desc = "nib: turn suggestions while typing on or off",
})

command("NibStatus", function()
  require("nib").status()
end, { desc = "nib: show the server, model and ghost text state" })
