// The journal's Storage on a real file, as LittleFS holds it on the board, with a power
// cut that can be armed: after `cut_after(n)`, the next writes reach the file for n more
// bytes and then stop (that write and every later one fail), the way a brown-out leaves
// the flash mid-write. A new FileStorage on the same path is the board after the reboot.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "plantwatch/journal.h"

namespace plantwatch::test {

class FileStorage : public Storage {
 public:
  explicit FileStorage(std::string path) : path_(std::move(path)) {
    file_ = std::fopen(path_.c_str(), "r+b");
    if (file_ == nullptr) file_ = std::fopen(path_.c_str(), "w+b");
  }
  ~FileStorage() override {
    if (file_ != nullptr) std::fclose(file_);
  }
  FileStorage(const FileStorage&) = delete;
  FileStorage& operator=(const FileStorage&) = delete;

  bool read(std::uint32_t offset, std::uint8_t* data, std::size_t size) override {
    return file_ != nullptr && std::fseek(file_, static_cast<long>(offset), SEEK_SET) == 0 &&
           std::fread(data, 1, size, file_) == size;
  }

  bool write(std::uint32_t offset, const std::uint8_t* data, std::size_t size) override {
    if (file_ == nullptr || std::fseek(file_, static_cast<long>(offset), SEEK_SET) != 0) return false;
    std::size_t n = size;
    if (cut_armed_) n = budget_ < size ? budget_ : size;
    if (cut_armed_) budget_ -= n;
    const bool whole = std::fwrite(data, 1, n, file_) == n && std::fflush(file_) == 0 && n == size;
    if (!whole) {
      cut_armed_ = true;  // the power is gone: nothing more is written
      budget_ = 0;
    }
    ++writes_;
    return whole;
  }

  void cut_after(std::size_t bytes) {
    cut_armed_ = true;
    budget_ = bytes;
  }
  std::size_t writes() const { return writes_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  bool cut_armed_ = false;
  std::size_t budget_ = 0;
  std::size_t writes_ = 0;
};

// A fresh file per test, removed afterwards.
class TempPath {
 public:
  explicit TempPath(const std::string& name)
      : path_((std::filesystem::temp_directory_path() / ("plantwatch-" + name + "-" + std::to_string(::getpid()) + ".bin")).string()) {
    std::filesystem::remove(path_);
  }
  ~TempPath() { std::filesystem::remove(path_); }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

// Bit rot: flips one bit of the byte at `offset` of the file.
inline void flip_bit(const std::string& path, long offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x10);
  f.seekp(offset);
  f.write(&c, 1);
}

}  // namespace plantwatch::test
