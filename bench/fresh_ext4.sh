#!/bin/bash
# A new ext4 for one benchmark round (root): make IMG (3 GiB, on tmpfs so the
# disk does not enter), mount it at MNT and copy TREE in as MNT/src_tree.
# Creating files where many were just deleted is slow on ext4 for minutes
# (DESIGN.md trap 16), so bench/alternate.py --reset runs this before every
# round instead of deleting the copies:
#   bench/alternate.py --rounds 5 --dir /mnt/e4 \
#       --reset 'bench/fresh_ext4.sh /dev/shm/e4.img /mnt/e4 /dev/shm/src_tree' \
#       gnu 'cp -r /mnt/e4/src_tree $D' ours 'uring-cp -r /mnt/e4/src_tree $D'
set -euo pipefail
img=$1 mnt=$2 tree=$3
mkdir -p "$mnt"
umount "$mnt" 2>/dev/null || true
truncate -s 3G "$img"
mkfs.ext4 -q -F "$img"
mount -o loop "$img" "$mnt"
cp -r "$tree" "$mnt/src_tree"
sync
