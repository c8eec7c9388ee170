# shellcheck shell=bash
# SC2154: toolsPath is set by the builder.
# shellcheck disable=SC2154
#
# The lab fixture's `bootctl`: NOT systemd's bootctl. A small stand-in, in every fixture
# system's sw/bin (so it wins over Debian's /usr/bin/bootctl on NixOS's PATHs), for the
# verbs deploy-flake needs against the lab's model of systemd-boot (lab/README.md, "Boot
# loader: systemd-boot as NixOS installs it"), written from systemd's bootctl(1) and
# docs/BOOT_LOADER_INTERFACE.md, not from its code:
#   bootctl is-installed            "yes", exit 0 when $ESP/loader/loader.conf exists; "no", exit 1
#   bootctl --print-esp-path | -p   /boot (the lab's ESP, which is also $BOOT)
#   bootctl --print-boot-path | -x  /boot
#   bootctl set-oneshot ID          EFI variable LoaderEntryOneShot (efivarfs format: 4 bytes of
#                                   attributes, the ID in UTF-16LE, NUL-terminated); refuses an ID
#                                   with no $BOOT/loader/entries/ID; "" removes the variable
#   bootctl set-default ID          the same for LoaderEntryDefault (over loader.conf's default)
#   bootctl list                    the boot entries, newest first, marked (default), (selected),
#                                   (oneshot)
#   bootctl status                  ESP, the loader's variables and the default entry
# The variables live in /sys/firmware/efi/efivars, which the lab models only where it can
# (the VM and the nspawn hosts: see lab/README.md); without it every variable verb fails as
# bootctl does on a machine not booted with UEFI. Entry IDs are ASCII (NixOS's are).
set -u
export PATH="$toolsPath"
ESP=/boot
EFIVARS=/sys/firmware/efi/efivars
LOADER_GUID=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f

efivar_read() {  # NAME: the value (UTF-16LE string, ASCII only) on stdout; 1 if unset
  local f=$EFIVARS/$1-$LOADER_GUID
  [ -f "$f" ] || return 1
  tail -c +5 "$f" | tr -d '\000'
}

efivar_write() {  # NAME VALUE: non-volatile, boot service and runtime access (0x7)
  local f=$EFIVARS/$1-$LOADER_GUID
  if [ -z "$2" ]; then
    rm -f "$f"
    return
  fi
  { printf '\007\000\000\000'; printf '%s' "$2" | sed 's/./&\n/g' | tr '\n' '\000'; printf '\000\000'; } > "$f.tmp" \
    && mv -f "$f.tmp" "$f"
}

need_efi() {
  if [ ! -d "$EFIVARS" ]; then
    echo "Not booted with UEFI (no $EFIVARS), cannot set EFI variables." >&2
    exit 1
  fi
}

loader_default() {  # loader.conf's `default`
  sed -n 's/^default[[:space:]]\{1,\}//p' "$ESP/loader/loader.conf" 2>/dev/null | tail -n 1
}

entry_field() {  # FILE KEY
  sed -n "s/^$2[[:space:]]\\{1,\\}//p" "$1" | head -n 1
}

entries_newest_first() {  # entry file names, newest generation first (systemd-boot: by version)
  local f
  for f in "$ESP"/loader/entries/*.conf; do
    [ -e "$f" ] && echo "${f##*/}"
  done | sort -t- -k3,3nr -k4
}

set_var_verb() {  # VAR ID
  need_efi
  local id=$2
  if [ -n "$id" ]; then
    case $id in
      */*|.*) echo "Invalid boot loader entry ID '$id'." >&2; exit 1 ;;
    esac
    if printf '%s' "$id" | LC_ALL=C grep -q '[^ -~]'; then
      echo "Invalid boot loader entry ID '$id' (not ASCII)." >&2
      exit 1
    fi
    # an ID is the entry's file name (NixOS's loader.conf names it so), or that without .conf
    if [ ! -f "$ESP/loader/entries/$id" ] && [ ! -f "$ESP/loader/entries/$id.conf" ]; then
      echo "Failed to find boot loader entry '$id' in $ESP/loader/entries." >&2
      exit 1
    fi
  fi
  efivar_write "$1" "$id" || { echo "Failed to update EFI variable '$1-$LOADER_GUID'." >&2; exit 1; }
}

list_verb() {
  local default oneshot selected efidefault id f marks
  default=$(loader_default)
  efidefault=$(efivar_read LoaderEntryDefault) || efidefault=
  [ -n "$efidefault" ] && default=$efidefault
  oneshot=$(efivar_read LoaderEntryOneShot) || oneshot=
  selected=$(efivar_read LoaderEntrySelected) || selected=
  echo "Boot Loader Entries:"
  for id in $(entries_newest_first); do
    f=$ESP/loader/entries/$id
    marks=
    [ "$id" = "$default" ] && marks="$marks (default)"
    [ "$id" = "$oneshot" ] && marks="$marks (oneshot)"
    [ "$id" = "$selected" ] && marks="$marks (selected)"
    printf '%14s %s%s\n' "title:" "$(entry_field "$f" title)" "$marks"
    printf '%14s %s\n' "id:" "$id"
    printf '%14s %s\n' "source:" "$f"
    printf '%14s %s\n' "sort-key:" "$(entry_field "$f" sort-key)"
    printf '%14s %s\n' "version:" "$(entry_field "$f" version)"
    printf '%14s %s\n' "linux:" "$ESP$(entry_field "$f" linux)"
    printf '%14s %s\n' "initrd:" "$ESP$(entry_field "$f" initrd)"
    printf '%14s %s\n' "options:" "$(entry_field "$f" options)"
    echo
  done
}

status_verb() {
  echo "System:"
  if [ -d "$EFIVARS" ]; then echo "      Firmware: lab model of UEFI variables (no firmware)"; else echo "      Firmware: n/a (not booted with UEFI)"; fi
  echo
  echo "Current Boot Loader:"
  printf '%14s %s\n' "Product:" "lab fixture (not systemd-boot)"
  printf '%14s %s\n' "Selected:" "$(efivar_read LoaderEntrySelected || echo n/a)"
  printf '%14s %s\n' "OneShot:" "$(efivar_read LoaderEntryOneShot || echo n/a)"
  printf '%14s %s\n' "EFI default:" "$(efivar_read LoaderEntryDefault || echo n/a)"
  echo
  printf '%14s %s\n' "ESP:" "$ESP"
  printf '%14s %s\n' "loader.conf:" "default $(loader_default)"
}

case "${1:-status}" in
  is-installed)
    if [ -f "$ESP/loader/loader.conf" ]; then echo yes; exit 0; fi
    echo no; exit 1 ;;
  --print-esp-path|-p|--print-boot-path|-x) echo "$ESP" ;;
  set-oneshot) [ $# = 2 ] || { echo "bootctl set-oneshot ID" >&2; exit 1; }; set_var_verb LoaderEntryOneShot "$2" ;;
  set-default) [ $# = 2 ] || { echo "bootctl set-default ID" >&2; exit 1; }; set_var_verb LoaderEntryDefault "$2" ;;
  list) list_verb ;;
  status) status_verb ;;
  *)
    echo "bootctl (lab fixture, not systemd's): unknown verb '$1'; known: is-installed, --print-esp-path, --print-boot-path, set-oneshot, set-default, list, status" >&2
    exit 1 ;;
esac
