// Command ociarchive packs static binaries into a one-layer OCI image archive that
// `ctr -n k8s.io images import` loads, because the test node can pull from nowhere.
//
//	ociarchive -name localhost/workbench/pause:1 -out pause.tar -entrypoint /pause pause
//
// Each binary lands at /<its file name> (mode 0755, owned by root) beside empty /etc, /tmp,
// /proc, /sys and /dev for the runtime's mount points. The archive is reproducible: the
// same binaries give the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// blob is one content-addressed file of the image layout.
type blob struct {
	mediaType string
	data      []byte
}

func (b blob) digest() string {
	sum := sha256.Sum256(b.data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (b blob) descriptor() map[string]any {
	return map[string]any{"mediaType": b.mediaType, "digest": b.digest(), "size": len(b.data)}
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		log.Fatal(err)
	}
	return data
}

// layer is the uncompressed tar of the image's whole file system.
func layer(binaries []string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, dir := range []string{"dev", "etc", "proc", "sys", "tmp"} {
		mode := int64(0o755)
		if dir == "tmp" {
			mode = 0o1777
		}
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: mode, ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			log.Fatal(err)
		}
	}
	for _, path := range binaries {
		data, err := os.ReadFile(path)
		if err != nil {
			log.Fatal(err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: filepath.Base(path), Mode: 0o755,
			Size: int64(len(data)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			log.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			log.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

func main() {
	name := flag.String("name", "", "image name with tag, e.g. localhost/workbench/pause:1")
	out := flag.String("out", "", "archive to write")
	entrypoint := flag.String("entrypoint", "", "entrypoint, split on spaces")
	user := flag.String("user", "", "default user (uid[:gid]) of the image")
	flag.Parse()
	if *name == "" || *out == "" || flag.NArg() == 0 {
		log.Fatal("usage: ociarchive -name NAME:TAG -out FILE [-entrypoint CMD] [-user UID] BINARY...")
	}
	tag := (*name)[strings.LastIndex(*name, ":")+1:]

	rootfs := blob{"application/vnd.oci.image.layer.v1.tar", layer(flag.Args())}
	config := blob{"application/vnd.oci.image.config.v1+json", mustJSON(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": strings.Fields(*entrypoint),
			"User":       *user,
			"Env":        []string{"PATH=/"},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{rootfs.digest()}},
	})}
	manifest := blob{"application/vnd.oci.image.manifest.v1+json", mustJSON(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        config.descriptor(),
		"layers":        []any{rootfs.descriptor()},
	})}
	desc := manifest.descriptor()
	// containerd names the imported image after io.containerd.image.name.
	desc["annotations"] = map[string]string{
		"io.containerd.image.name":          *name,
		"org.opencontainers.image.ref.name": tag,
	}
	index := mustJSON(map[string]any{"schemaVersion": 2, "manifests": []any{desc}})

	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	tw := tar.NewWriter(f)
	write := func(path string, data []byte) {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: 0o644, Size: int64(len(data)),
			ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			log.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			log.Fatal(err)
		}
	}
	write("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	write("index.json", index)
	for _, b := range []blob{rootfs, config, manifest} {
		write("blobs/sha256/"+strings.TrimPrefix(b.digest(), "sha256:"), b.data)
	}
	if err := tw.Close(); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(*out)
}
